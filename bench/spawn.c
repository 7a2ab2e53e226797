/* spawn ROUNDS NAME CMD... [";;" NAME CMD...]...: runs each command ROUNDS times, interleaved
 * (round 1 of every command, then round 2, ...), each as fork + execvp + waitpid with its
 * output sent to /dev/null, and prints the median, 10th and 90th percentiles of each and the
 * ratio of its median to the first command's. Interleaving keeps a noisy neighbour from
 * favouring one side. A command that starts with --new-namespaces is cloned into new PID,
 * mount, IPC, UTS, network and cgroup namespaces instead of forked: the cost of fresh
 * namespaces alone, with nothing set up in them, is the floor of any sandbox that makes them
 * per run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_CMDS 8

struct cmd {
    const char *name;
    char **argv;
    double *samples;
    int failures;
};

static double run_once(char **argv, int *failed)
{
    long flags = SIGCHLD;
    if (strcmp(argv[0], "--new-namespaces") == 0) {
        flags |= CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
                 CLONE_NEWCGROUP;
        argv++;
    }
    double t0 = bench_now();
    pid_t pid = (pid_t)syscall(SYS_clone, flags, 0, 0, 0, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    double t = bench_now() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        (*failed)++;
    return t;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: spawn ROUNDS NAME CMD... [\";;\" NAME CMD...]...\n");
        return 2;
    }
    int rounds = atoi(argv[1]);
    struct cmd cmds[MAX_CMDS];
    int n = 0;
    for (int i = 2; i < argc && n < MAX_CMDS;) {
        cmds[n].name = argv[i++];
        cmds[n].argv = &argv[i];
        while (i < argc && strcmp(argv[i], ";;") != 0)
            i++;
        if (i < argc)
            argv[i++] = NULL;
        cmds[n].samples = calloc((size_t)rounds, sizeof(double));
        cmds[n].failures = 0;
        n++;
    }
    for (int c = 0; c < n; c++) /* warm-up */
        run_once(cmds[c].argv, &cmds[c].failures);
    for (int c = 0; c < n; c++)
        cmds[c].failures = 0;
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < n; c++)
            cmds[c].samples[r] = run_once(cmds[c].argv, &cmds[c].failures);
    double base = 0;
    printf("%-28s %10s %10s %10s %8s %6s\n", "command", "median ms", "p10 ms", "p90 ms", "ratio",
           "fails");
    for (int c = 0; c < n; c++) {
        qsort(cmds[c].samples, (size_t)rounds, sizeof(double), bench_cmp_double);
        double med = cmds[c].samples[rounds / 2];
        if (c == 0)
            base = med;
        printf("%-28s %10.3f %10.3f %10.3f %7.2fx %6d\n", cmds[c].name, med * 1e3,
               cmds[c].samples[rounds / 10] * 1e3, cmds[c].samples[rounds * 9 / 10] * 1e3,
               med / base, cmds[c].failures);
        free(cmds[c].samples);
    }
    return 0;
}
