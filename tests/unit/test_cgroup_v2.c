/* The cgroup v2 file protocol against a fake cgroup tree in a temporary directory: what the
 * sandbox writes (limits, delegation) and how it reads what the kernel reports (CPU, peak,
 * OOM kills). The real kernel side runs in `make test-cgroup2` (a cgroup-v2-only VM).
 *
 * A fake tree cannot say EBUSY to a subtree_control write, so the "no internal processes"
 * path is tested through its parts: cg_v2_move_to_leaf (alone or not) and the restart from a
 * leaf; the kernel's EBUSY itself is exercised in the VM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox/cgroup.h"

static char scratch[256];

static int make_scratch(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/envicutor-cg-XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static int remove_scratch(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", scratch);
    return system(cmd) == 0 ? 0 : -1;
}

static void path(char *buf, const char *rel)
{
    snprintf(buf, 512, "%s/%s", scratch, rel);
}

static void mkdirs(const char *rel)
{
    char p[512];
    path(p, rel);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s", p);
    assert_int_equal(system(cmd), 0);
}

static void put(const char *rel, const char *content)
{
    char p[512];
    path(p, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    assert_int_equal(fclose(f), 0);
}

static void get(const char *rel, char *buf, size_t size)
{
    char p[512];
    path(p, rel);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static bool exists(const char *rel)
{
    char p[512];
    path(p, rel);
    return access(p, F_OK) == 0;
}

static int opendir_rel(const char *rel)
{
    char p[512];
    path(p, rel);
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

/* A run cgroup as the kernel would show it (only the files we touch). */
static int fake_run(void)
{
    mkdirs("run");
    put("run/memory.max", "");
    put("run/memory.swap.max", "");
    put("run/pids.max", "");
    return opendir_rel("run");
}

static void test_set_limits_writes_memory_swap_and_pids(void **state)
{
    (void)state;
    int fd = fake_run();
    struct cg_limits l = {.memory_bytes = 64 << 20, .pids = 11};
    struct ev_err err;
    assert_int_equal(cg_v2_set_limits(fd, &l, true, true, &err), 0);
    char buf[64];
    get("run/memory.max", buf, sizeof(buf));
    assert_string_equal(buf, "67108864");
    get("run/memory.swap.max", buf, sizeof(buf));
    assert_string_equal(buf, "0");
    get("run/pids.max", buf, sizeof(buf));
    assert_string_equal(buf, "11");
    close(fd);
}

static void test_set_limits_only_for_v2_controllers(void **state)
{
    (void)state;
    int fd = fake_run();
    struct cg_limits l = {.memory_bytes = 1 << 20, .pids = 5};
    struct ev_err err;
    /* pids from v1: pids.max of the v2 cgroup is left alone */
    assert_int_equal(cg_v2_set_limits(fd, &l, true, false, &err), 0);
    char buf[64];
    get("run/pids.max", buf, sizeof(buf));
    assert_string_equal(buf, "");
    close(fd);
}

static void test_set_limits_without_swap_accounting(void **state)
{
    (void)state;
    int fd = fake_run();
    char p[512];
    path(p, "run/memory.swap.max");
    assert_int_equal(unlink(p), 0); /* kernel without swap accounting: nothing to limit */
    struct cg_limits l = {.memory_bytes = 4096, .pids = 2};
    struct ev_err err;
    assert_int_equal(cg_v2_set_limits(fd, &l, true, true, &err), 0);
    char buf[64];
    get("run/memory.max", buf, sizeof(buf));
    assert_string_equal(buf, "4096");
    close(fd);
}

static void test_set_limits_reports_a_missing_knob(void **state)
{
    (void)state;
    int fd = fake_run();
    char p[512];
    path(p, "run/pids.max");
    assert_int_equal(unlink(p), 0);
    struct cg_limits l = {.memory_bytes = 4096, .pids = 2};
    struct ev_err err;
    assert_int_equal(cg_v2_set_limits(fd, &l, true, true, &err), -1);
    assert_int_equal(err.errnum, ENOENT);
    assert_non_null(strstr(err.msg, "pids.max"));
    close(fd);
}

static void test_cpu_usec_from_cpu_stat(void **state)
{
    (void)state;
    int fd = fake_run();
    /* with the cpu controller, more keys follow; without it, only these three */
    put("run/cpu.stat", "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n"
                        "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n");
    uint64_t usec = 0;
    struct ev_err err;
    assert_int_equal(cg_v2_read_cpu_usec(fd, &usec, &err), 0);
    assert_int_equal(usec, 1234567);
    put("run/cpu.stat", "user_usec 1\n");
    assert_int_equal(cg_v2_read_cpu_usec(fd, &usec, &err), -1);
    assert_non_null(strstr(err.msg, "usage_usec"));
    close(fd);
}

static const char events_no_oom[] = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 0\noom_group_kill 0\n";
static const char events_oom[] = "low 0\nhigh 0\nmax 93\noom 1\noom_kill 1\noom_group_kill 0\n";

static void test_memory_with_peak(void **state)
{
    (void)state;
    int fd = fake_run();
    put("run/memory.peak", "70254592\n");
    put("run/memory.current", "4096\n");
    put("run/memory.events", events_oom);
    uint64_t peak = 0;
    bool oom = false;
    struct ev_err err;
    /* memory.peak wins over anything sampled */
    assert_int_equal(cg_v2_read_memory(fd, true, 999999999, &peak, &oom, &err), 0);
    assert_int_equal(peak, 70254592);
    assert_true(oom);
    close(fd);
}

static void test_memory_without_peak_uses_the_sampled_maximum(void **state)
{
    (void)state;
    int fd = fake_run();
    put("run/memory.current", "8192\n");
    put("run/memory.events", events_no_oom);
    uint64_t peak = 0;
    bool oom = true;
    struct ev_err err;
    /* kernels < 5.19: no memory.peak file at all */
    assert_int_equal(cg_v2_read_memory(fd, false, 50 << 20, &peak, &oom, &err), 0);
    assert_int_equal(peak, 50 << 20);
    assert_false(oom); /* "oom 2" (allocation failures) and "max 17" are not kills */
    /* memory.current above every sample (the run grew after the last one) */
    put("run/memory.current", "99999999\n");
    assert_int_equal(cg_v2_read_memory(fd, false, 50 << 20, &peak, &oom, &err), 0);
    assert_int_equal(peak, 99999999);
    close(fd);
}

static void test_run_sampling_keeps_the_maximum(void **state)
{
    (void)state;
    struct cg_host h = {.memory = CG_V2, .v2 = true, .v2_peak = false};
    assert_int_equal(cg_sample_interval_us(&h), 5000);
    struct cg_run r = {.v2_fd = fake_run()};
    put("run/memory.current", "1000\n");
    cg_run_sample_memory(&h, &r);
    put("run/memory.current", "5000\n");
    cg_run_sample_memory(&h, &r);
    put("run/memory.current", "3000\n");
    cg_run_sample_memory(&h, &r);
    assert_int_equal(r.peak_sampled, 5000);
    put("run/memory.current", "0\n");
    put("run/memory.events", events_no_oom);
    uint64_t peak;
    bool oom;
    struct ev_err err;
    assert_int_equal(cg_run_memory(&h, &r, &peak, &oom, &err), 0);
    assert_int_equal(peak, 5000);
    /* with memory.peak, or memory from v1, there is nothing to sample */
    h.v2_peak = true;
    assert_int_equal(cg_sample_interval_us(&h), 0);
    h.v2_peak = false;
    h.memory = CG_V1;
    assert_int_equal(cg_sample_interval_us(&h), 0);
    close(r.v2_fd);
}

static void test_oom_kill_parsing(void **state)
{
    (void)state;
    int fd = fake_run();
    put("run/memory.peak", "1\n");
    uint64_t peak;
    bool oom;
    struct ev_err err;
    put("run/memory.events", "oom_group_kill 4\noom_kill 0\n");
    assert_int_equal(cg_v2_read_memory(fd, true, 0, &peak, &oom, &err), 0);
    assert_false(oom);
    put("run/memory.events", "oom_kill 12\n");
    assert_int_equal(cg_v2_read_memory(fd, true, 0, &peak, &oom, &err), 0);
    assert_true(oom);
    put("run/memory.events", "low 0\nhigh 0\n"); /* kernels before 4.13 had no oom_kill */
    assert_int_equal(cg_v2_read_memory(fd, true, 0, &peak, &oom, &err), -1);
    assert_non_null(strstr(err.msg, "oom_kill"));
    close(fd);
}

/* A cgroup directory as the kernel shows it to delegation. */
static void fake_cgroup(const char *rel, const char *controllers, const char *procs)
{
    char p[512];
    mkdirs(rel);
    snprintf(p, sizeof(p), "%s/cgroup.controllers", rel);
    put(p, controllers);
    snprintf(p, sizeof(p), "%s/cgroup.subtree_control", rel);
    put(p, "");
    snprintf(p, sizeof(p), "%s/cgroup.procs", rel);
    put(p, procs);
}

static void test_move_to_leaf_when_alone(void **state)
{
    (void)state;
    char me[32];
    snprintf(me, sizeof(me), "%d\n", (int)getpid());
    fake_cgroup("svc", "cpu memory pids\n", me);
    fake_cgroup("svc/envicutor-server", "", ""); /* the kernel creates cgroup.procs */
    int fd = opendir_rel("svc");
    struct ev_err err;
    assert_int_equal(cg_v2_move_to_leaf(fd, CG_V2_SERVER_LEAF, &err), 0);
    char buf[64];
    get("svc/envicutor-server/cgroup.procs", buf, sizeof(buf));
    assert_string_equal(buf, "0"); /* "0" moves the writer */
    close(fd);
}

static void test_move_to_leaf_refuses_to_leave_others_behind(void **state)
{
    (void)state;
    char procs[64];
    snprintf(procs, sizeof(procs), "1\n%d\n", (int)getpid());
    fake_cgroup("shell", "memory pids\n", procs);
    int fd = opendir_rel("shell");
    struct ev_err err;
    assert_int_equal(cg_v2_move_to_leaf(fd, CG_V2_SERVER_LEAF, &err), -1);
    assert_int_equal(err.errnum, EBUSY);
    assert_false(exists("shell/envicutor-server")); /* nothing moved, nothing created */
    close(fd);
}

static void test_delegate_writes_subtree_control(void **state)
{
    (void)state;
    fake_cgroup("d", "memory pids\n", "");
    int fd = opendir_rel("d");
    struct ev_err err;
    assert_int_equal(cg_v2_delegate(fd, "+memory +pids", CG_V2_SERVER_LEAF, &err), 0);
    char buf[64];
    get("d/cgroup.subtree_control", buf, sizeof(buf));
    assert_string_equal(buf, "+memory +pids");
    /* nothing to enable: no write at all (a controller-less v1 "unified" tree) */
    put("d/cgroup.subtree_control", "");
    assert_int_equal(cg_v2_delegate(fd, "", CG_V2_SERVER_LEAF, &err), 0);
    get("d/cgroup.subtree_control", buf, sizeof(buf));
    assert_string_equal(buf, "");
    close(fd);
}

static void test_setup_enables_controllers_down_to_the_subtree(void **state)
{
    (void)state;
    fake_cgroup("root", "cpuset cpu io memory hugetlb pids rdma misc\n", "1\n");
    /* the kernel fills the new child's cgroup.controllers from the parent's subtree_control;
     * here the parent handed down memory and pids but not cpu */
    fake_cgroup("root/envicutor", "memory pids\n", "");
    put("root/envicutor/cgroup.kill", "");
    put("root/envicutor/memory.peak", "0\n");
    char dir[512];
    path(dir, "root");
    struct cg_host h = {0};
    struct ev_err err;
    assert_int_equal(cg_v2_setup(&h, dir, true, &err), 0);
    char buf[128];
    get("root/cgroup.subtree_control", buf, sizeof(buf));
    assert_string_equal(buf, "+memory +pids +cpu");
    get("root/envicutor/cgroup.subtree_control", buf, sizeof(buf));
    assert_string_equal(buf, "+memory +pids");
    char want[600];
    snprintf(want, sizeof(want), "%s/envicutor", dir);
    assert_string_equal(h.v2_base, want);
    assert_true(h.v2);
    assert_int_equal(h.memory, CG_V2);
    assert_int_equal(h.pids, CG_V2);
    assert_int_equal(h.cpu, CG_V2);
    assert_false(h.v2_cpu_ctl);
    assert_true(h.v2_kill);
    assert_true(h.v2_peak);
    char desc[700];
    cg_host_describe(&h, desc, sizeof(desc));
    assert_non_null(strstr(desc, "memory=v2 pids=v2 cpu=v2 kill=cgroup.kill peak=memory.peak"));
}

static void test_setup_old_kernel_and_no_controllers(void **state)
{
    (void)state;
    /* a v1 hybrid host's unified tree: no controllers, no cgroup.kill (< 5.14) */
    fake_cgroup("unified", "\n", "1\n");
    fake_cgroup("unified/envicutor", "\n", "");
    char dir[512];
    path(dir, "unified");
    struct cg_host h = {0};
    struct ev_err err;
    assert_int_equal(cg_v2_setup(&h, dir, true, &err), 0);
    char buf[64];
    get("unified/cgroup.subtree_control", buf, sizeof(buf));
    assert_string_equal(buf, "");
    assert_int_equal(h.memory, CG_NONE);
    assert_int_equal(h.pids, CG_NONE);
    assert_int_equal(h.cpu, CG_V2);
    assert_false(h.v2_kill);
    assert_false(h.v2_peak);
}

static void test_setup_without_memory_peak_samples(void **state)
{
    (void)state;
    fake_cgroup("k510", "memory pids\n", "1\n");
    fake_cgroup("k510/envicutor", "memory pids\n", "");
    char dir[512];
    path(dir, "k510");
    struct cg_host h = {0};
    struct ev_err err;
    assert_int_equal(cg_v2_setup(&h, dir, true, &err), 0);
    assert_int_equal(h.memory, CG_V2);
    assert_false(h.v2_peak);
    assert_int_equal(cg_sample_interval_us(&h), 5000);
    char desc[700];
    cg_host_describe(&h, desc, sizeof(desc));
    assert_non_null(strstr(desc, "peak=sampled"));
}

static void test_setup_from_our_own_leaf_delegates_one_level_up(void **state)
{
    (void)state;
    char me[32];
    snprintf(me, sizeof(me), "%d\n", (int)getpid());
    fake_cgroup("svc2", "memory pids\n", "");
    fake_cgroup("svc2/envicutor-server", "", me);
    fake_cgroup("svc2/envicutor", "memory pids\n", "");
    char dir[512];
    path(dir, "svc2/envicutor-server");
    struct cg_host h = {0};
    struct ev_err err;
    assert_int_equal(cg_v2_setup(&h, dir, false, &err), 0);
    char want[600];
    path(want, "svc2/envicutor");
    assert_string_equal(h.v2_base, want);
    assert_false(exists("svc2/envicutor-server/envicutor"));
    char buf[64];
    get("svc2/cgroup.subtree_control", buf, sizeof(buf));
    assert_string_equal(buf, "+memory +pids");
}

static void test_cleanup_spares_live_boxes(void **state)
{
    (void)state;
    mkdirs("clean/cg/envicutor/box-1");
    mkdirs("clean/cg/envicutor/box-2");
    mkdirs("clean/cg/envicutor/box-3");
    mkdirs("clean/cg/envicutor/not-a-box");
    mkdirs("clean/locks");
    put("clean/locks/1", "");
    put("clean/locks/2", "");
    /* no lock file for box 3: never owned by anyone */
    char lock1[512], locks[512];
    path(lock1, "clean/locks/1");
    path(locks, "clean/locks");
    int held = open(lock1, O_RDWR | O_CLOEXEC);
    assert_true(held >= 0);
    assert_int_equal(flock(held, LOCK_EX | LOCK_NB), 0); /* box 1 is live */

    struct cg_host h = {.v2 = true, .cpu = CG_V2};
    path(h.v2_base, "clean/cg/envicutor");
    struct ev_err err;
    assert_int_equal(cg_host_cleanup(&h, locks, &err), 2);
    assert_true(exists("clean/cg/envicutor/box-1"));
    assert_false(exists("clean/cg/envicutor/box-2"));
    assert_false(exists("clean/cg/envicutor/box-3"));
    assert_true(exists("clean/cg/envicutor")); /* it still holds a live box */

    close(held);
    char other[512];
    path(other, "clean/cg/envicutor/not-a-box");
    assert_int_equal(rmdir(other), 0);
    assert_int_equal(cg_host_cleanup(&h, locks, &err), 1);
    assert_false(exists("clean/cg/envicutor")); /* empty now: the subtree goes too */
    assert_true(exists("clean/cg"));
    /* nothing left: a second shutdown is a no-op */
    assert_int_equal(cg_host_cleanup(&h, locks, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_limits_writes_memory_swap_and_pids),
        cmocka_unit_test(test_set_limits_only_for_v2_controllers),
        cmocka_unit_test(test_set_limits_without_swap_accounting),
        cmocka_unit_test(test_set_limits_reports_a_missing_knob),
        cmocka_unit_test(test_cpu_usec_from_cpu_stat),
        cmocka_unit_test(test_memory_with_peak),
        cmocka_unit_test(test_memory_without_peak_uses_the_sampled_maximum),
        cmocka_unit_test(test_run_sampling_keeps_the_maximum),
        cmocka_unit_test(test_oom_kill_parsing),
        cmocka_unit_test(test_move_to_leaf_when_alone),
        cmocka_unit_test(test_move_to_leaf_refuses_to_leave_others_behind),
        cmocka_unit_test(test_delegate_writes_subtree_control),
        cmocka_unit_test(test_setup_enables_controllers_down_to_the_subtree),
        cmocka_unit_test(test_setup_old_kernel_and_no_controllers),
        cmocka_unit_test(test_setup_without_memory_peak_samples),
        cmocka_unit_test(test_setup_from_our_own_leaf_delegates_one_level_up),
        cmocka_unit_test(test_cleanup_spares_live_boxes),
    };
    return cmocka_run_group_tests(tests, make_scratch, remove_scratch);
}
