/* Unit tests of the compile cache's storage: entries written and read back whole, a damaged
 * or cut entry is a miss and is removed, least recently used eviction under the bound, the
 * index rebuilt from the files at open (order of use included), leftovers and groups of
 * runtimes that are gone removed at open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/compile_cache.h"

static char scratch[256], data[300], runtimes[300];

static int make_scratch(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/envicutor-unit-XXXXXX");
    if (!mkdtemp(scratch))
        return -1;
    snprintf(data, sizeof(data), "%s", scratch);
    snprintf(runtimes, sizeof(runtimes), "%s/runtimes", scratch);
    if (mkdir(runtimes, 0700) < 0)
        return -1;
    char p[400];
    snprintf(p, sizeof(p), "%s/rtA", runtimes);
    if (mkdir(p, 0700) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/rtB", runtimes);
    return mkdir(p, 0700);
}

static int remove_scratch(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", scratch);
    return system(cmd) == 0 ? 0 : -1;
}

static void key(int n, char out[CCACHE_KEY_LEN + 1])
{
    for (int i = 0; i < CCACHE_KEY_LEN; i++)
        out[i] = "0123456789abcdef"[(n + i) % 16];
    out[CCACHE_KEY_LEN] = '\0';
}

static void text(struct sbx_output *o, const char *s)
{
    o->data = (char *)s;
    o->len = strlen(s);
}

/* An entry with an archive of `size` bytes, all `fill`. */
static struct ccache_entry entry(char *archive, size_t size, char fill)
{
    memset(archive, fill, size);
    struct ccache_entry e = {.archive = archive, .archive_len = size};
    e.compile.status = SBX_RE;
    e.compile.exit_code = 1;
    e.compile.exit_signal = -1;
    e.compile.cpu_time_us = 1234;
    e.compile.wall_time_us = 5678;
    e.compile.memory_kb = 910;
    e.compile.err.truncated = true;
    snprintf(e.compile.message, sizeof(e.compile.message), "exited with 1");
    text(&e.compile.out, "compiler says\n");
    text(&e.compile.err, "error: x\n");
    return e;
}

static void entry_file(const char *rt, int n, char *out, size_t size)
{
    char k[CCACHE_KEY_LEN + 1];
    key(n, k);
    snprintf(out, size, "%s/compile-cache/%s/%s", data, rt, k);
}

static bool has(struct ccache *c, const char *rt, int n)
{
    char k[CCACHE_KEY_LEN + 1];
    key(n, k);
    struct ccache_entry e;
    bool found;
    struct ev_err err;
    assert_int_equal(ccache_get(c, rt, k, &e, &found, &err), 0);
    if (found)
        ccache_entry_free(&e);
    return found;
}

static void put(struct ccache *c, const char *rt, int n, size_t size)
{
    char *buf = malloc(size + 1);
    assert_non_null(buf);
    struct ccache_entry e = entry(buf, size, (char)('a' + n));
    char k[CCACHE_KEY_LEN + 1];
    key(n, k);
    struct ev_err err;
    assert_int_equal(ccache_put(c, rt, k, &e, &err), 0);
    free(buf);
}

static void test_entry_reads_back_whole(void **state)
{
    (void)state;
    struct ev_err err;
    struct ccache *c = ccache_open(data, runtimes, 1 << 20, &err);
    assert_non_null(c);
    char archive[3000];
    struct ccache_entry in = entry(archive, sizeof(archive), 'z');
    in.has_extract = true;
    in.extract.status = SBX_OK;
    in.extract.exit_code = 0;
    text(&in.extract.out, "");
    text(&in.extract.err, "unzip\n");
    char k[CCACHE_KEY_LEN + 1];
    key(1, k);
    assert_int_equal(ccache_put(c, "rtA", k, &in, &err), 0);

    struct ccache_entry out;
    bool found;
    assert_int_equal(ccache_get(c, "rtA", k, &out, &found, &err), 0);
    assert_true(found);
    assert_true(out.has_extract);
    assert_int_equal(out.extract.status, SBX_OK);
    assert_string_equal(out.extract.err.data, "unzip\n");
    assert_int_equal(out.compile.status, SBX_RE);
    assert_int_equal(out.compile.exit_code, 1);
    assert_int_equal(out.compile.exit_signal, -1);
    assert_int_equal(out.compile.cpu_time_us, 1234);
    assert_int_equal(out.compile.wall_time_us, 5678);
    assert_int_equal(out.compile.memory_kb, 910);
    assert_true(out.compile.err.truncated);
    assert_false(out.compile.out.truncated);
    assert_string_equal(out.compile.message, "exited with 1");
    assert_string_equal(out.compile.out.data, "compiler says\n");
    assert_int_equal(out.archive_len, sizeof(archive));
    assert_memory_equal(out.archive, archive, sizeof(archive));
    ccache_entry_free(&out);

    /* another runtime's group does not answer for it */
    assert_false(has(c, "rtB", 1));
    /* read-only on disk */
    char path[600];
    entry_file("rtA", 1, path, sizeof(path));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0444);
    ccache_close(c);
}

static void damage(const char *path, off_t at, bool cut)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        /* a non-root run of the unit tests: make it writable first */
        assert_int_equal(chmod(path, 0644), 0);
        fd = open(path, O_WRONLY | O_CLOEXEC);
    }
    assert_true(fd >= 0);
    if (cut)
        assert_int_equal(ftruncate(fd, at), 0);
    else
        assert_int_equal(pwrite(fd, "\x01", 1, at), 1);
    close(fd);
}

static void test_damaged_entry_is_a_miss_and_removed(void **state)
{
    (void)state;
    struct ev_err err;
    struct ccache *c = ccache_open(data, runtimes, 1 << 20, &err);
    assert_non_null(c);
    char path[600];
    for (int cut = 0; cut <= 1; cut++) {
        put(c, "rtA", 2, 500);
        uint64_t used = ccache_used(c);
        assert_true(used > 500);
        entry_file("rtA", 2, path, sizeof(path));
        damage(path, 300, cut);
        assert_false(has(c, "rtA", 2));
        assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(ccache_used(c), 0);
    }
    ccache_close(c);
}

static void test_least_recently_used_goes_first(void **state)
{
    (void)state;
    struct ev_err err;
    /* room for two entries of about 1400 bytes (1000 of archive, the results, the header and
     * the digest), not three */
    struct ccache *c = ccache_open(data, runtimes, 3500, &err);
    assert_non_null(c);
    put(c, "rtA", 1, 1000);
    put(c, "rtB", 2, 1000);
    assert_true(has(c, "rtA", 1)); /* 2 is now the least recently used */
    put(c, "rtA", 3, 1000);
    assert_false(has(c, "rtB", 2));
    assert_true(has(c, "rtA", 1));
    assert_true(has(c, "rtA", 3));
    assert_true(ccache_used(c) <= 3500);
    /* larger than the whole bound: not stored, nothing evicted for it */
    put(c, "rtA", 4, 5000);
    assert_false(has(c, "rtA", 4));
    assert_true(has(c, "rtA", 1));
    ccache_close(c);
}

static void test_open_rebuilds_the_index_and_cleans(void **state)
{
    (void)state;
    struct ev_err err;
    struct ccache *c = ccache_open(data, runtimes, 1 << 20, &err);
    assert_non_null(c);
    put(c, "rtA", 1, 1000);
    put(c, "rtA", 2, 1000);
    put(c, "rtB", 3, 1000);
    /* the order of use is the files' modification times: make it unambiguous */
    char p1[600], p2[600], p3[600];
    entry_file("rtA", 1, p1, sizeof(p1));
    entry_file("rtA", 2, p2, sizeof(p2));
    entry_file("rtB", 3, p3, sizeof(p3));
    struct timespec t[2] = {{1000, 0}, {1000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p2, t, 0), 0);
    t[0].tv_sec = t[1].tv_sec = 2000;
    assert_int_equal(utimensat(AT_FDCWD, p1, t, 0), 0);
    t[0].tv_sec = t[1].tv_sec = 3000;
    assert_int_equal(utimensat(AT_FDCWD, p3, t, 0), 0);
    uint64_t used = ccache_used(c);
    ccache_close(c);

    /* what a crash leaves: a temporary file; and a runtime deleted while the server was down */
    char p[600];
    snprintf(p, sizeof(p), "%s/compile-cache/rtA/.tmp-00", data);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
    assert_true(fd >= 0);
    close(fd);
    snprintf(p, sizeof(p), "%s/rtB", runtimes);
    assert_int_equal(rmdir(p), 0);

    c = ccache_open(data, runtimes, 1 << 20, &err);
    assert_non_null(c);
    snprintf(p, sizeof(p), "%s/compile-cache/rtA/.tmp-00", data);
    assert_int_equal(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/compile-cache/rtB", data);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(ccache_used(c), used / 3 * 2);
    ccache_close(c);

    /* a smaller bound at open evicts by the order of use: 2 (older) goes, 1 stays */
    c = ccache_open(data, runtimes, used / 3 + 10, &err);
    assert_non_null(c);
    assert_true(has(c, "rtA", 1));
    assert_false(has(c, "rtA", 2));
    ccache_close(c);
}

static void test_drop_runtime_removes_its_group_only(void **state)
{
    (void)state;
    struct ev_err err;
    struct ccache *c = ccache_open(data, runtimes, 1 << 20, &err);
    assert_non_null(c);
    put(c, "rtA", 1, 100);
    put(c, "rtA", 2, 100);
    put(c, "rtB", 3, 100);
    assert_int_equal(ccache_drop_runtime(c, "rtA", &err), 0);
    char p[600];
    snprintf(p, sizeof(p), "%s/compile-cache/rtA", data);
    assert_int_equal(access(p, F_OK), -1);
    assert_false(has(c, "rtA", 1));
    assert_true(has(c, "rtB", 3));
    ccache_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_entry_reads_back_whole, make_scratch, remove_scratch),
        cmocka_unit_test_setup_teardown(test_damaged_entry_is_a_miss_and_removed, make_scratch,
                                        remove_scratch),
        cmocka_unit_test_setup_teardown(test_least_recently_used_goes_first, make_scratch,
                                        remove_scratch),
        cmocka_unit_test_setup_teardown(test_open_rebuilds_the_index_and_cleans, make_scratch,
                                        remove_scratch),
        cmocka_unit_test_setup_teardown(test_drop_runtime_removes_its_group_only, make_scratch,
                                        remove_scratch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
