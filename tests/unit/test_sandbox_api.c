/* The sandbox through its C interface, as the server uses it: a box kept across runs (files
 * carry over, the uid stays), cancellation, several runs at once from threads (a child cloned
 * from a multi-threaded process must neither keep other runs' descriptors nor call glibc
 * functions that wait for the parent's threads), and no descriptor growth over many runs.
 * Needs root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/sandbox.h"

static struct sbx_host host;
static char *const env[] = {"PATH=/usr/bin:/bin", "HOME=/tmp", NULL};

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int run_sh(struct sbx_box *box, const char *script, struct sbx_result *res)
{
    char *const argv[] = {"sh", "-c", (char *)script, NULL};
    struct sbx_run_config cfg = {.argv = argv, .envp = env};
    sbx_limits_default(&cfg.limits);
    cfg.limits.wall_time_us = 10 * 1000000;
    /* small, so that descriptors copied from runs of other threads would show */
    cfg.limits.max_open_files = 16; /* dash keeps saved descriptors at 10 and up */
    struct ev_err err;
    int r = sbx_run(&host, box, &cfg, res, &err);
    if (r < 0)
        fprintf(stderr, "sbx_run: %s\n", err.msg);
    return r;
}

static void test_box_carries_files_across_runs(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    struct sbx_result res;
    assert_int_equal(run_sh(&box, "echo compiled > prog; id -u", &res), 0);
    assert_int_equal(res.status, SBX_OK);
    char uid[32];
    snprintf(uid, sizeof(uid), "%u\n", (unsigned)box.uid);
    assert_string_equal(res.out.data, uid);
    sbx_result_free(&res);
    assert_int_equal(run_sh(&box, "cat prog; id -u; ls /tmp | wc -l", &res), 0);
    char expect[64];
    snprintf(expect, sizeof(expect), "compiled\n%u\n0\n", (unsigned)box.uid);
    assert_string_equal(res.out.data, expect);
    sbx_result_free(&res);
    sbx_box_close(&host, &box);
}

static void test_cancel_stops_a_run_at_once(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    int efd = eventfd(0, EFD_CLOEXEC);
    char *const argv[] = {"sh", "-c", "trap '' TERM INT ABRT; sleep 30", NULL};
    struct sbx_run_config cfg = {.argv = argv, .envp = env, .cancel_fd = efd};
    sbx_limits_default(&cfg.limits);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100000);
        uint64_t one = 1;
        _exit(write(efd, &one, sizeof(one)) == sizeof(one) ? 0 : 1);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct sbx_result res;
    assert_int_equal(sbx_run(&host, &box, &cfg, &res, &err), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_non_null(strstr(err.msg, "cancelled"));
    assert_true(t1.tv_sec - t0.tv_sec < 3);
    sbx_result_free(&res);
    close(efd);
    sbx_box_close(&host, &box);
}

static void *worker(void *arg)
{
    long *ok = arg;
    struct sbx_box box;
    struct ev_err err;
    if (sbx_box_open(&host, NULL, &box, &err) < 0)
        return NULL;
    struct sbx_result res;
    for (int i = 0; i < 5; i++) {
        if (run_sh(&box, "echo $$; sleep 0.05", &res) == 0 && res.status == SBX_OK &&
            strcmp(res.out.data, "2\n") == 0)
            (*ok)++;
        sbx_result_free(&res);
    }
    sbx_box_close(&host, &box);
    return NULL;
}

static void test_runs_from_several_threads_at_once(void **state)
{
    (void)state;
    pthread_t t[4];
    long ok[4] = {0};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, &ok[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ok[i], 5);
}

static void test_no_descriptor_leak_over_many_runs(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    struct sbx_result res;
    assert_int_equal(run_sh(&box, "true", &res), 0);
    sbx_result_free(&res);
    int before = count_fds();
    for (int i = 0; i < 50; i++) {
        assert_int_equal(run_sh(&box, i % 2 ? "exit 3" : "kill -9 $$", &res), 0);
        assert_int_equal(res.status, i % 2 ? SBX_RE : SBX_SG);
        sbx_result_free(&res);
    }
    assert_int_equal(count_fds(), before);
    sbx_box_close(&host, &box);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_sandbox_api: needs root\n");
        return 1;
    }
    struct ev_err err;
    struct sbx_host_config cfg = {.run_dir = getenv("ENVICUTOR_RUN_DIR")};
    if (sbx_host_init(&host, &cfg, &err) < 0) {
        fprintf(stderr, "sbx_host_init: %s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_box_carries_files_across_runs),
        cmocka_unit_test(test_cancel_stops_a_run_at_once),
        cmocka_unit_test(test_runs_from_several_threads_at_once),
        cmocka_unit_test(test_no_descriptor_leak_over_many_runs),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    sbx_host_free(&host);
    return r;
}
