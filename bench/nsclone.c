/* nsclone [ROUNDS]: what each kind of namespace costs to make and to tear down. For each set of
 * clone flags, ROUNDS times: clone a child that exits at once, then wait for it; prints the
 * median time of the clone call and of exit + wait. The network namespace is the costly one,
 * and the reason the server makes them ahead (docs/sandbox.md, "Made ahead"). */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    if (rounds < 1)
        rounds = 1;
    static const struct {
        const char *name;
        long flags;
    } sets[] = {
        {"no new namespace", 0},
        {"pid", CLONE_NEWPID},
        {"mount", CLONE_NEWNS},
        {"ipc", CLONE_NEWIPC},
        {"uts", CLONE_NEWUTS},
        {"cgroup", CLONE_NEWCGROUP},
        {"network", CLONE_NEWNET},
        {"all but network",
         CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP},
        {"all six",
         CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWNET},
    };
    double *clone_ms = calloc((size_t)rounds, sizeof(double));
    double *exit_ms = calloc((size_t)rounds, sizeof(double));
    printf("%-20s %14s %16s\n", "namespaces", "clone ms", "exit+wait ms");
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        for (int r = 0; r < rounds; r++) {
            double t0 = bench_now_ms();
            pid_t pid = (pid_t)syscall(SYS_clone, sets[s].flags | SIGCHLD, 0, 0, 0, 0);
            if (pid == 0)
                _exit(0);
            double t1 = bench_now_ms();
            if (pid < 0) {
                perror("clone");
                return 1;
            }
            waitpid(pid, NULL, 0);
            clone_ms[r] = t1 - t0;
            exit_ms[r] = bench_now_ms() - t1;
        }
        qsort(clone_ms, (size_t)rounds, sizeof(double), bench_cmp_double);
        qsort(exit_ms, (size_t)rounds, sizeof(double), bench_cmp_double);
        printf("%-20s %14.3f %16.3f\n", sets[s].name, clone_ms[rounds / 2], exit_ms[rounds / 2]);
    }
    free(clone_ms);
    free(exit_ms);
    return 0;
}
