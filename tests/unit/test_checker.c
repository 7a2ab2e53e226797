/* Unit tests of the built-in checkers of judge mode: each one on cases that tell it apart from
 * the others, from memory and from descriptors (reads that cross the reader's chunks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "pipeline/checker.h"

static enum check_result cmp(enum checker_kind k, double eps, const char *out, const char *exp)
{
    struct check_src o = {out, strlen(out), 0}, e = {exp, strlen(exp), 0};
    char msg[200];
    struct ev_err err = {0};
    enum check_result r = checker_compare(k, eps, &o, &e, msg, sizeof(msg), &err);
    if (r == CHECK_WA)
        assert_true(msg[0] != '\0');
    return r;
}

static void test_exact(void **state)
{
    (void)state;
    assert_int_equal(cmp(CHECKER_EXACT, 0, "a b\n", "a b\n"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_EXACT, 0, "a b", "a b\n"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_EXACT, 0, "a b \n", "a b\n"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_EXACT, 0, "", ""), CHECK_AC);
    assert_int_equal(cmp(CHECKER_EXACT, 0, "x", ""), CHECK_WA);
}

static void test_lines(void **state)
{
    (void)state;
    /* trailing blanks of each line and trailing empty lines do not count */
    assert_int_equal(cmp(CHECKER_LINES, 0, "a  \t\nb\r\n\n\n", "a\nb"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_LINES, 0, "a\nb", "a\nb\n\n"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_LINES, 0, "", "\n\n"), CHECK_AC);
    /* blanks inside a line, leading blanks and empty lines in the middle do */
    assert_int_equal(cmp(CHECKER_LINES, 0, "a  b\n", "a b\n"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_LINES, 0, " a\n", "a\n"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_LINES, 0, "a\n\nb\n", "a\nb\n"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_LINES, 0, "a\n   \nb\n", "a\n\nb"), CHECK_AC);
    /* tokens would accept this one, lines does not */
    assert_int_equal(cmp(CHECKER_LINES, 0, "1 2\n", "1\n2\n"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_LINES, 0, "a\nb\n", "a\n"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_LINES, 0, "a\n", "a\nb\n"), CHECK_WA);
}

static void test_tokens(void **state)
{
    (void)state;
    assert_int_equal(cmp(CHECKER_TOKENS, 0, "1 2\n", "1\n2\n"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_TOKENS, 0, "  1\t\t2  \n\n", "1 2"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_TOKENS, 0, "12", "1 2"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_TOKENS, 0, "1 2", "1 2 3"), CHECK_WA);
    /* no tolerance for numbers: that is the float checker's */
    assert_int_equal(cmp(CHECKER_TOKENS, 0, "1.0", "1"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_TOKENS, 0, "", "  \n"), CHECK_AC);
}

static void test_float(void **state)
{
    (void)state;
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "1.0000001\n", "1"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "1.1", "1"), CHECK_WA);
    /* relative error for large values, absolute for small ones */
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "1000000.5", "1000000"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "1000002", "1000000"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "0.0000005", "0"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_FLOAT, 0, "2.50", "2.5"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "1e3 abc", "1000 abc"), CHECK_AC);
    /* words are compared as they are */
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "abc", "abd"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "1 2", "1"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "nan", "nan"), CHECK_AC);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "nan", "1"), CHECK_WA);
    assert_int_equal(cmp(CHECKER_FLOAT, 1e-6, "1x", "1"), CHECK_WA);
}

static int memfd_of(const char *data, size_t len)
{
    int fd = memfd_create("checker-test", MFD_CLOEXEC);
    assert_true(fd > 0);
    assert_true(write_full(fd, data, len) == (ssize_t)len);
    return fd;
}

/* Expected outputs from descriptors, larger than the reader's chunk, with a run of blanks
 * longer than a chunk; the descriptor's offset is left where it was. */
static void test_from_descriptors(void **state)
{
    (void)state;
    size_t n = 300000;
    char *out = malloc(n + 1), *exp = malloc(n + 200001);
    assert_non_null(out);
    assert_non_null(exp);
    for (size_t i = 0; i < n; i++)
        out[i] = (i % 7 == 6) ? '\n' : (char)('a' + i % 26);
    memcpy(exp, out, n);
    /* trailing blanks on the last line: 200000 of them */
    memset(exp + n, ' ', 200000);
    int fd = memfd_of(exp, n + 200000);
    struct check_src o = {out, n, 0}, e = {NULL, 0, fd};
    char msg[200];
    struct ev_err err = {0};
    assert_int_equal(checker_compare(CHECKER_LINES, 0, &o, &e, msg, sizeof(msg), &err), CHECK_AC);
    assert_int_equal(checker_compare(CHECKER_TOKENS, 0, &o, &e, msg, sizeof(msg), &err), CHECK_AC);
    assert_int_equal(checker_compare(CHECKER_EXACT, 0, &o, &e, msg, sizeof(msg), &err), CHECK_WA);
    /* one byte changed far into the file */
    out[250001] = out[250001] == 'z' ? 'y' : 'z';
    assert_int_equal(checker_compare(CHECKER_LINES, 0, &o, &e, msg, sizeof(msg), &err), CHECK_WA);
    assert_non_null(strstr(msg, "line"));
    assert_int_equal(lseek(fd, 0, SEEK_CUR), n + 200000);
    close(fd);
    free(out);
    free(exp);
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(checker_from_name("lines"), CHECKER_LINES);
    assert_int_equal(checker_from_name("exact"), CHECKER_EXACT);
    assert_int_equal(checker_from_name("tokens"), CHECKER_TOKENS);
    assert_int_equal(checker_from_name("Lines"), -1);
    assert_string_equal(checker_name(CHECKER_TOKENS), "tokens");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_float),
        cmocka_unit_test(test_from_descriptors),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
