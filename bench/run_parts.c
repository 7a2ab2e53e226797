/* run_parts [ROUNDS]: what the parts of one sandbox run cost, each measured alone, ROUNDS
 * times, medians (ms):
 *   cgroups create + destroy   the run's cgroups in every hierarchy the host uses (as
 *                              cg_run_create / cg_run_destroy, empty: no task ever joined)
 *   each hierarchy alone       mkdir + rmdir of one empty cgroup in it
 *   pipes                      the four pipes of a run, made and closed
 *   clone NS + exit            clone into new PID, IPC and UTS namespaces (a run's set when
 *                              the network namespace is made ahead and the root prepared),
 *                              child exits at once, wait
 *   fork + exit                the same without new namespaces
 *   exec in a fresh cgroup     fork, the child joins a fresh cgroup of one hierarchy, execs
 *                              /bin/true, wait (the cgroup made before and removed after, not
 *                              timed): what a fresh cgroup adds to a program's own run
 * Needs root. docs/performance.md explains how these add up to one run. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "sandbox/sandbox.h"

#define MAX_ROUNDS 10000

static double med(double *s, int n)
{
    qsort(s, (size_t)n, sizeof(double), bench_cmp_double);
    return s[n / 2];
}

static double one_dir(const char *base, int rounds, double *s)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/bench-parts-%d", base, (int)getpid());
    for (int i = 0; i < rounds; i++) {
        if (mkdir(base, 0755) < 0 && errno != EEXIST) { /* as in exec_in */
            perror(base);
            return -1;
        }
        double t0 = bench_now_ms();
        if (mkdir(path, 0755) < 0 || rmdir(path) < 0) {
            perror(path);
            return -1;
        }
        s[i] = bench_now_ms() - t0;
    }
    return med(s, rounds);
}

/* One fork, join of a fresh cgroup under base (none when base is NULL), exec of /bin/true and
 * wait; the cgroup is made before and removed after, untimed. Returns ms, or -1. */
static double exec_in(const char *base)
{
    char dir[700], procs[720];
    snprintf(dir, sizeof(dir), "%s/bench-parts-exec-%d", base ? base : "", (int)getpid());
    snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
    /* another owner removes our subtree when it finds it empty (cg_host_cleanup) */
    if (base && mkdir(dir, 0755) < 0 &&
        (errno != ENOENT || mkdir(base, 0755) < 0 || mkdir(dir, 0755) < 0)) {
        perror(dir);
        return -1;
    }
    double t0 = bench_now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = base ? open(procs, O_WRONLY | O_CLOEXEC) : -1;
        if (base && (fd < 0 || write(fd, "0", 1) != 1))
            _exit(126);
        char *const argv[] = {"/bin/true", NULL}, *const envp[] = {NULL};
        execve(argv[0], argv, envp);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    double ms = bench_now_ms() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "run_parts: the child in %s failed\n", base ? dir : "no cgroup");
        return -1;
    }
    /* the exited child may take a moment to leave the cgroup */
    for (int t = 0; base && rmdir(dir) < 0; t++) {
        if (t > 2000) {
            perror(dir);
            return -1;
        }
        usleep(500);
    }
    return ms;
}

static double clone_exit(long flags, int rounds, double *s)
{
    for (int i = 0; i < rounds; i++) {
        double t0 = bench_now_ms();
        pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0)
            _exit(0);
        if (pid < 0) {
            perror("clone");
            return -1;
        }
        waitpid(pid, NULL, 0);
        s[i] = bench_now_ms() - t0;
    }
    return med(s, rounds);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    if (rounds < 10)
        rounds = 10;
    if (rounds > MAX_ROUNDS)
        rounds = MAX_ROUNDS;
    struct sbx_host_config hcfg = {.run_dir = getenv("ENVICUTOR_RUN_DIR"), .log = ev_log_stderr};
    struct sbx_host host;
    struct ev_err err;
    if (sbx_host_init(&host, &hcfg, &err) < 0) {
        fprintf(stderr, "run_parts: %s\n", err.msg);
        return 1;
    }
    static double s[MAX_ROUNDS];
    char name[32];
    snprintf(name, sizeof(name), "bench-parts-%d", (int)getpid());
    struct cg_limits l = {.memory_bytes = 1000000ull * 1024, .pids = 65};
    for (int i = 0; i < rounds; i++) {
        struct cg_run r;
        double t0 = bench_now_ms();
        if (cg_run_create(&host.cg, name, &l, &r, &err) < 0 ||
            cg_run_destroy(&host.cg, &r, &err) < 0) {
            fprintf(stderr, "run_parts: %s\n", err.msg);
            return 1;
        }
        s[i] = bench_now_ms() - t0;
    }
    printf("%-36s %10s\n", "part", "median ms");
    printf("%-36s %10.3f\n", "cgroups create + destroy", med(s, rounds));
    const struct {
        const char *name;
        const char *base;
        bool on;
    } hier[] = {
        {"  v2 cgroup mkdir + rmdir", host.cg.v2_base, host.cg.v2},
        {"  v1 memory cgroup mkdir + rmdir", host.cg.v1_memory, host.cg.memory == CG_V1},
        {"  v1 pids cgroup mkdir + rmdir", host.cg.v1_pids, host.cg.pids == CG_V1},
        {"  v1 cpuacct cgroup mkdir + rmdir", host.cg.v1_cpuacct, host.cg.cpu == CG_V1},
    };
    for (size_t h = 0; h < sizeof(hier) / sizeof(hier[0]); h++)
        if (hier[h].on)
            printf("%-36s %10.3f\n", hier[h].name, one_dir(hier[h].base, rounds, s));
    /* interleaved: round i of each, then round i+1, so that load moves them alike */
    const struct {
        const char *name;
        const char *base;
        bool on;
    } exec_hier[] = {
        {"fork + exec /bin/true + wait", NULL, true},
        {"  the same in a fresh v2 cgroup", host.cg.v2_base, host.cg.v2},
        {"  the same in a fresh v1 memory cgroup", host.cg.v1_memory, host.cg.memory == CG_V1},
        {"  the same in a fresh v1 pids cgroup", host.cg.v1_pids, host.cg.pids == CG_V1},
    };
    enum { N_EXEC = sizeof(exec_hier) / sizeof(exec_hier[0]) };
    static double es[N_EXEC][MAX_ROUNDS];
    for (int i = 0; i < rounds; i++)
        for (int h = 0; h < N_EXEC; h++)
            if (exec_hier[h].on && (es[h][i] = exec_in(exec_hier[h].base)) < 0)
                return 1;
    for (int h = 0; h < N_EXEC; h++)
        if (exec_hier[h].on)
            printf("%-36s %10.3f\n", exec_hier[h].name, med(es[h], rounds));
    for (int i = 0; i < rounds; i++) {
        int p[4][2];
        double t0 = bench_now_ms();
        for (int j = 0; j < 4; j++)
            if (pipe2(p[j], O_CLOEXEC) < 0)
                return 1;
        for (int j = 0; j < 4; j++) {
            close(p[j][0]);
            close(p[j][1]);
        }
        s[i] = bench_now_ms() - t0;
    }
    printf("%-36s %10.3f\n", "pipes", med(s, rounds));
    printf("%-36s %10.3f\n", "clone pid+ipc+uts + exit + wait",
           clone_exit(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS, rounds, s));
    printf("%-36s %10.3f\n", "fork + exit + wait", clone_exit(0, rounds, s));
    sbx_host_free(&host);
    return 0;
}
