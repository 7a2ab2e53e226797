/* helper_run [ROUNDS]: the sandbox as the server's helper uses it (network namespaces made
 * ahead, prepared roots), through its C interface, against bare fork+exec+wait, interleaved:
 *   bare               fork + execve("/bin/true") + waitpid
 *   new namespaces     the same cloned into new PID, mount, IPC, UTS, network and cgroup
 *                      namespaces, nothing set up in them: the floor of a sandbox that makes
 *                      them per run
 *   run in a box       sbx_run of /bin/true in an open box: fresh PID, mount (a copy of the
 *                      box's prepared root), IPC, UTS, network and cgroup namespaces, cgroups,
 *                      limits, metrics, teardown
 *   box + run + close  the same with the box opened (tmpfs) and closed around it, as one
 *                      submission of one stage
 * Prints the median, 10th and 90th percentiles, the ratio to bare and the ratio to the
 * namespace floor. Needs root. */
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
#include "sandbox/sandbox.h"

static char *const env[] = {"PATH=/usr/bin:/bin", NULL};
static char *const argv_true[] = {"/bin/true", NULL};

static double bare(long ns_flags)
{
    double t0 = bench_now_ms();
    pid_t pid = (pid_t)syscall(SYS_clone, ns_flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        execve(argv_true[0], argv_true, env);
        _exit(127);
    }
    waitpid(pid, NULL, 0);
    return bench_now_ms() - t0;
}

static int run(struct sbx_host *host, struct sbx_box *box, double *ms)
{
    struct sbx_run_config cfg = {.argv = argv_true, .envp = env};
    sbx_limits_default(&cfg.limits);
    struct sbx_result res;
    struct ev_err err;
    double t0 = bench_now_ms();
    int r = sbx_run(host, box, &cfg, &res, &err);
    *ms = bench_now_ms() - t0;
    if (r < 0 || res.status != SBX_OK)
        fprintf(stderr, "helper_run: %s\n", r < 0 ? err.msg : res.message);
    sbx_result_free(&res);
    return r < 0 || res.status != SBX_OK ? -1 : 0;
}

static void report(const char *name, double *s, int n, double base, double floor)
{
    qsort(s, (size_t)n, sizeof(double), bench_cmp_double);
    printf("%-28s %10.3f %10.3f %10.3f %7.2fx %7.2fx\n", name, s[n / 2], s[n / 10], s[n * 9 / 10],
           s[n / 2] / base, s[n / 2] / floor);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 300;
    if (rounds < 10)
        rounds = 10;
    static const char *const points[] = {"/runtime", "/nix", NULL};
    struct sbx_host_config hcfg = {
        .run_dir = getenv("ENVICUTOR_RUN_DIR"),
        .netns_ahead = 4,
        .prepared_root_points = points,
        .log = ev_log_stderr,
    };
    struct sbx_host host;
    struct ev_err err;
    if (sbx_host_init(&host, &hcfg, &err) < 0) {
        fprintf(stderr, "helper_run: %s\n", err.msg);
        return 1;
    }
    struct sbx_box box;
    if (sbx_box_open(&host, NULL, &box, &err) < 0) {
        fprintf(stderr, "helper_run: %s\n", err.msg);
        sbx_host_free(&host);
        return 1;
    }
    double *b = calloc((size_t)rounds, sizeof(double));
    double *r = calloc((size_t)rounds, sizeof(double));
    double *c = calloc((size_t)rounds, sizeof(double));
    double *f = calloc((size_t)rounds, sizeof(double));
    const long all_ns =
        CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWCGROUP;
    int fails = 0;
    double warm;
    fails += run(&host, &box, &warm) < 0; /* builds the box's prepared root */
    for (int i = 0; i < rounds; i++) {
        b[i] = bare(0);
        f[i] = bare(all_ns);
        fails += run(&host, &box, &r[i]) < 0;
        double t0 = bench_now_ms();
        struct sbx_box other;
        if (sbx_box_open(&host, NULL, &other, &err) < 0) {
            fprintf(stderr, "helper_run: %s\n", err.msg);
            fails++;
            c[i] = 0;
            continue;
        }
        double ms;
        fails += run(&host, &other, &ms) < 0;
        sbx_box_close(&host, &other);
        c[i] = bench_now_ms() - t0;
    }
    sbx_box_close(&host, &box);
    sbx_host_free(&host);
    printf("%-28s %10s %10s %10s %8s %8s\n", "command", "median ms", "p10 ms", "p90 ms", "ratio",
           "/floor");
    qsort(b, (size_t)rounds, sizeof(double), bench_cmp_double);
    qsort(f, (size_t)rounds, sizeof(double), bench_cmp_double);
    double base = b[rounds / 2], floor = f[rounds / 2];
    report("bare", b, rounds, base, floor);
    report("new namespaces only", f, rounds, base, floor);
    report("run in a box", r, rounds, base, floor);
    report("box + run + close", c, rounds, base, floor);
    printf("failures: %d\n", fails);
    free(b);
    free(r);
    free(c);
    free(f);
    return fails ? 1 : 0;
}
