/* Unit tests of the common helpers: safe tree removal, UTF-8 repair, base64, option parsing,
 * the search of PATH, reading a whole descriptor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/options.h"
#include "common/base64.h"
#include "common/filename.h"
#include "common/fileutil.h"
#include "common/path.h"
#include "common/error.h"
#include "common/rmtree.h"
#include "common/utf8.h"

static char scratch[256];

static int make_scratch(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/envicutor-unit-XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static int remove_scratch(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s 2>/dev/null; rm -rf %s", scratch, scratch);
    return system(cmd) == 0 ? 0 : -1;
}

static void path(char *buf, const char *rel)
{
    snprintf(buf, 512, "%s/%s", scratch, rel);
}

static void touch(const char *rel, const char *content)
{
    char p[512];
    path(p, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

/* The tree holds links to a directory and a file outside it, and unreadable directories: the
 * removal must take the tree and leave the outside untouched. */
static void test_rmtree_never_follows_links(void **state)
{
    (void)state;
    char p[512], q[512];
    path(p, "outside");
    assert_int_equal(mkdir(p, 0755), 0);
    touch("outside/keep", "precious");
    path(p, "tree");
    assert_int_equal(mkdir(p, 0755), 0);
    path(p, "tree/sub");
    assert_int_equal(mkdir(p, 0755), 0);
    touch("tree/sub/file", "x");
    path(p, "outside");
    path(q, "tree/dirlink");
    assert_int_equal(symlink(p, q), 0);
    path(p, "outside/keep");
    path(q, "tree/sub/filelink");
    assert_int_equal(symlink(p, q), 0);
    path(p, "tree/locked");
    assert_int_equal(mkdir(p, 0755), 0);
    touch("tree/locked/inner", "y");
    assert_int_equal(chmod(p, 0), 0);
    path(p, "tree/sub");
    assert_int_equal(chmod(p, 0), 0);

    int dfd = open(scratch, O_RDONLY | O_DIRECTORY);
    struct ev_err err;
    assert_int_equal(rmtree_at(dfd, "tree", &err), 0);
    close(dfd);

    path(p, "tree");
    assert_int_equal(access(p, F_OK), -1);
    path(p, "outside/keep");
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char buf[32] = {0};
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    assert_string_equal(buf, "precious");
}

static void test_rmtree_of_a_link_removes_only_the_link(void **state)
{
    (void)state;
    char p[512], q[512];
    path(p, "target");
    assert_int_equal(mkdir(p, 0755), 0);
    touch("target/f", "z");
    path(q, "link");
    assert_int_equal(symlink(p, q), 0);
    int dfd = open(scratch, O_RDONLY | O_DIRECTORY);
    struct ev_err err;
    assert_int_equal(rmtree_at(dfd, "link", &err), 0);
    assert_int_equal(rmtree_at(dfd, "missing", &err), 0);
    close(dfd);
    path(p, "target/f");
    assert_int_equal(access(p, F_OK), 0);
}

static void test_utf8_sanitize(void **state)
{
    (void)state;
    struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain", 5, "plain"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},
        {"a\xff"
         "b",
         3,
         "a\xef\xbf\xbd"
         "b"},
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' */
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xe2\x82", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                 /* cut short */
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        char *s = utf8_sanitize(cases[i].in, cases[i].len, &n);
        assert_non_null(s);
        assert_int_equal(n, strlen(cases[i].out));
        assert_memory_equal(s, cases[i].out, n);
        free(s);
    }
    size_t n;
    char *s = utf8_sanitize("a\0b", 3, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "a\0b", 3);
    free(s);
}

static void test_base64_round_trip_and_errors(void **state)
{
    (void)state;
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char *e = base64_encode(plain[i], strlen(plain[i]));
        assert_string_equal(e, coded[i]);
        free(e);
        size_t n, bad;
        char *d = base64_decode(coded[i], strlen(coded[i]), &n, &bad);
        assert_non_null(d);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(d, plain[i], n);
        free(d);
    }
    size_t n, bad = 0;
    assert_null(base64_decode("Zm9v!", 5, &n, &bad));
    assert_null(base64_decode("Zm9vY", 5, &n, &bad));
    assert_null(base64_decode("Zm9*", 4, &n, &bad));
    assert_int_equal(bad, 3);
}

/* The rule both the HTTP layer and the helper apply to a file name written into a box. */
static void test_plain_file_name(void **state)
{
    (void)state;
    assert_true(plain_file_name("main.py"));
    assert_true(plain_file_name(".hidden"));
    assert_true(plain_file_name("..."));
    assert_false(plain_file_name(""));
    assert_false(plain_file_name("."));
    assert_false(plain_file_name(".."));
    assert_false(plain_file_name("a/b"));
    assert_false(plain_file_name("/main.py"));
    assert_false(plain_file_name("dir/"));
    char name[300];
    memset(name, 'a', 255);
    name[255] = '\0';
    assert_true(plain_file_name(name)); /* 255 bytes: the longest a file system takes */
    name[255] = 'a';
    name[256] = '\0';
    assert_false(plain_file_name(name));
}

static void test_parse_seconds(void **state)
{
    (void)state;
    uint64_t us;
    struct ev_err err;
    assert_int_equal(parse_seconds("t", "2", false, 100, &us, &err), 0);
    assert_int_equal(us, 2000000);
    assert_int_equal(parse_seconds("t", "0.0000001", false, 100, &us, &err), 0);
    assert_int_equal(us, 1);
    assert_int_equal(parse_seconds("t", "0", true, 100, &us, &err), 0);
    assert_int_equal(us, 0);
    const char *bad[] = {"0", "-1", "nan", "inf", "1e400", "101", "", " 1", "1s", "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse_seconds("t", bad[i], false, 100, &us, &err), -1);
        assert_non_null(strstr(err.msg, "t: expected"));
    }
}

/* The line a program writes for what a layer reports without failing: prefixed, one line. */
static void test_log_stderr_writes_one_prefixed_line(void **state)
{
    (void)state;
    char path[] = "/tmp/envicutor-test-log-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    ev_log_stderr(NULL, "skipping box 3: busy");
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    char buf[64] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    assert_int_equal(n, (ssize_t)strlen("envicutor: skipping box 3: busy\n"));
    assert_string_equal(buf, "envicutor: skipping box 3: busy\n");
}

static void test_parse_count(void **state)
{
    (void)state;
    uint64_t v;
    struct ev_err err;
    assert_int_equal(parse_count("n", "64", 1, 100, &v, &err), 0);
    assert_int_equal(v, 64);
    const char *bad[] = {"0", "101", "-1", "1.5", "", "99999999999999999999999", "+3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse_count("n", bad[i], 1, 100, &v, &err), -1);
}

/* Each entry in turn, an empty one standing for the current directory as execvp reads it, and
 * an entry too long for the buffer skipped rather than cut. */
static void test_path_next_walks_every_entry(void **state)
{
    (void)state;
    const char *cursor = ":/a::/bb/c:";
    char out[64];
    const char *want[] = {"x", "/a/x", "x", "/bb/c/x"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_true(path_next(&cursor, "x", out, sizeof(out)));
        assert_string_equal(out, want[i]);
    }
    assert_false(path_next(&cursor, "x", out, sizeof(out)));

    cursor = "";
    assert_false(path_next(&cursor, "x", out, sizeof(out)));
    cursor = "/long/directory:/d";
    char small[6]; /* "/d/x" fits, "/long/directory/x" does not */
    assert_true(path_next(&cursor, "x", small, sizeof(small)));
    assert_string_equal(small, "/d/x");
    assert_false(path_next(&cursor, "x", small, sizeof(small)));
}

/* The first executable file in an absolute directory; relative and empty entries are never
 * looked in, even when the working directory holds the command. */
static void test_find_in_path_takes_the_first_executable(void **state)
{
    (void)state;
    char a[512], b[512], list[1100], out[600], want[600];
    path(a, "a");
    path(b, "b");
    assert_int_equal(mkdir(a, 0755), 0);
    assert_int_equal(mkdir(b, 0755), 0);
    touch("a/tool", "not executable");
    touch("b/tool", "#!/bin/sh\n");
    touch("tool", "#!/bin/sh\n");
    path(want, "b/tool");
    assert_int_equal(chmod(want, 0755), 0);
    path(want, "tool");
    assert_int_equal(chmod(want, 0755), 0);

    snprintf(list, sizeof(list), "%s:%s", a, b);
    assert_int_equal(find_in_path("tool", list, out, sizeof(out)), 0);
    path(want, "b/tool");
    assert_string_equal(out, want);
    assert_int_equal(find_in_path("missing", list, out, sizeof(out)), -1);

    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(scratch), 0);
    int rc = find_in_path("tool", ":b:.", out, sizeof(out));
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, -1);
}

/* A file written through the descriptor (its offset at the end) reads whole from its start,
 * also across several growths of the buffer; a file one byte over the cap is refused. */
static void test_read_whole_fd(void **state)
{
    (void)state;
    int fd = memfd_create("unit", MFD_CLOEXEC);
    assert_true(fd >= 0);
    size_t size = 100000; /* several times the first buffer */
    char *text = malloc(size);
    assert_non_null(text);
    for (size_t i = 0; i < size; i++)
        text[i] = (char)('a' + i % 26);
    assert_int_equal(write_full(fd, text, size), (ssize_t)size);

    char *out = NULL;
    size_t len = 0;
    struct ev_err err;
    assert_int_equal(read_whole_fd(fd, size, "the file", &out, &len, &err), 0);
    assert_int_equal(len, size);
    assert_memory_equal(out, text, size);
    assert_int_equal(out[size], '\0');
    free(out);

    assert_int_equal(read_whole_fd(fd, size - 1, "the file", &out, &len, &err), -1);
    assert_null(out);
    assert_non_null(strstr(err.msg, "the file is larger than 99999 bytes"));

    char part[10];
    assert_int_equal(pread_full(fd, part, sizeof(part), (off_t)(size - 4)), 4);
    assert_memory_equal(part, text + size - 4, 4);
    free(text);
    close(fd);

    /* /proc reports size 0 for a file that is not empty. */
    fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(read_whole_fd(fd, 1u << 28, "mountinfo", &out, &len, &err), 0);
    assert_true(len > 0);
    assert_int_equal(strlen(out), len);
    assert_non_null(strstr(out, " / "));
    free(out);
    close(fd);
}

/* Every missing directory below the prefix is made, those already there are accepted, the
 * path is given back as it came, and a file in the way is an error naming where. */
static void test_make_dirs(void **state)
{
    (void)state;
    char p[512], q[512];
    struct ev_err err;
    path(p, "x/y/z");
    snprintf(q, sizeof(q), "%s", p);
    assert_int_equal(make_dirs(p, strlen(scratch) + 1, 0750, &err), 0);
    assert_string_equal(p, q);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(make_dirs(p, strlen(scratch) + 1, 0750, &err), 0);

    touch("file", "");
    path(p, "file/sub");
    assert_int_equal(make_dirs(p, strlen(scratch) + 1, 0755, &err), -1);
    path(q, "file/sub");
    assert_string_equal(p, q);
    assert_non_null(strstr(err.msg, "file/sub"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rmtree_never_follows_links, make_scratch,
                                        remove_scratch),
        cmocka_unit_test_setup_teardown(test_rmtree_of_a_link_removes_only_the_link, make_scratch,
                                        remove_scratch),
        cmocka_unit_test(test_utf8_sanitize),
        cmocka_unit_test(test_plain_file_name),
        cmocka_unit_test(test_base64_round_trip_and_errors),
        cmocka_unit_test(test_parse_seconds),
        cmocka_unit_test(test_parse_count),
        cmocka_unit_test(test_path_next_walks_every_entry),
        cmocka_unit_test(test_read_whole_fd),
        cmocka_unit_test_setup_teardown(test_make_dirs, make_scratch, remove_scratch),
        cmocka_unit_test_setup_teardown(test_find_in_path_takes_the_first_executable, make_scratch,
                                        remove_scratch),
        cmocka_unit_test(test_log_stderr_writes_one_prefixed_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
