/* parallel WORKERS SECONDS STDIN_FILE CMD...: WORKERS processes each run CMD (fork + execvp +
 * waitpid, stdin from STDIN_FILE, stdout to /dev/null) back to back for SECONDS; prints the
 * completions per second and the 50th and 99th percentile latency. The bare baseline for the
 * API throughput benchmark. With --new-namespaces before CMD, each run is cloned into new PID,
 * mount, IPC, UTS, network and cgroup namespaces instead of forked: the floor of a sandbox that
 * makes fresh namespaces per run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_SAMPLES 200000

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: parallel WORKERS SECONDS STDIN_FILE CMD...\n");
        return 2;
    }
    int workers = atoi(argv[1]);
    double secs = atof(argv[2]);
    const char *in = argv[3];
    char **cmd = argv + 4;
    long flags = SIGCHLD;
    if (cmd[0] && strcmp(cmd[0], "--new-namespaces") == 0) {
        flags |= CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
                 CLONE_NEWCGROUP;
        cmd++;
    }
    /* shared between the workers: a sample count and the samples */
    size_t size = sizeof(long) + MAX_SAMPLES * sizeof(double);
    char *shm = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    long *count = (long *)shm;
    double *samples = (double *)(shm + sizeof(long));
    double end = bench_now() + secs;
    int failures = 0;
    for (int w = 0; w < workers; w++) {
        if (fork() != 0)
            continue;
        while (bench_now() < end) {
            double t0 = bench_now();
            pid_t pid = (pid_t)syscall(SYS_clone, flags, 0, 0, 0, 0);
            if (pid == 0) {
                int fd = open(in, O_RDONLY);
                int null = open("/dev/null", O_WRONLY);
                dup2(fd, 0);
                dup2(null, 1);
                execvp(cmd[0], cmd);
                _exit(127);
            }
            int st;
            waitpid(pid, &st, 0);
            long i = __atomic_fetch_add(count, 1, __ATOMIC_SEQ_CST);
            if (i < MAX_SAMPLES)
                samples[i] = bench_now() - t0;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                failures++;
        }
        _exit(failures ? 1 : 0);
    }
    int st, bad = 0;
    while (wait(&st) > 0)
        bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    long n = *count < MAX_SAMPLES ? *count : MAX_SAMPLES;
    qsort(samples, (size_t)n, sizeof(double), bench_cmp_double);
    printf("%.1f per second, p50 %.2f ms, p99 %.2f ms, %ld runs%s\n", (double)*count / secs,
           samples[n / 2] * 1e3, samples[n * 99 / 100] * 1e3, *count, bad ? " (some failed)" : "");
    return bad;
}
