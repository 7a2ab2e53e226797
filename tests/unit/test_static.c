/* Unit tests of the playground's embedded files (http/static_files.h): only embedded names are
 * found, each has a type the server sends, and only a plain Host reaches the policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "http/static_files.h"

static void only_embedded_names_are_found(void **state)
{
    (void)state;
    const struct static_file *f = static_file_find("index.html");
    assert_non_null(f);
    assert_true(f->len > 0);
    assert_int_equal(f->data[f->len], 0);
    assert_non_null(strstr((const char *)f->data, "/static/playground.js"));
    const char *absent[] = {"",
                            "/index.html",
                            "./index.html",
                            "../index.html",
                            "web/index.html",
                            "index.html/",
                            "INDEX.HTML",
                            "index.htm",
                            "..",
                            ".",
                            "../../etc/passwd",
                            "/etc/passwd"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        assert_null(static_file_find(absent[i]));
}

static void every_embedded_file_has_a_type_and_an_etag(void **state)
{
    (void)state;
    assert_true(static_files_count >= 3);
    for (size_t i = 0; i < static_files_count; i++) {
        const struct static_file *f = &static_files[i];
        assert_non_null(static_content_type(f->name));
        assert_ptr_equal(static_file_find(f->name), f);
        size_t n = strlen(f->etag);
        assert_true(n > 2 && f->etag[0] == '"' && f->etag[n - 1] == '"');
    }
    assert_string_equal(static_content_type("a.js"), "text/javascript; charset=utf-8");
    assert_string_equal(static_content_type("a.html"), "text/html; charset=utf-8");
    assert_null(static_content_type("a.exe"));
    assert_null(static_content_type("js"));
    assert_null(static_content_type("a.js.bak"));
}

static void only_a_plain_host_reaches_the_policy(void **state)
{
    (void)state;
    const char *good[] = {"localhost", "127.0.0.1:5000", "[::1]:5000", "play.example.org"};
    const char *bad[] = {NULL, "", "a b", "a;b", "x'y", "a\"b", "host/path", "a,b", "ä.org"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(static_host_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(static_host_valid(bad[i]));
    char long_host[300];
    memset(long_host, 'a', sizeof(long_host) - 1);
    long_host[sizeof(long_host) - 1] = '\0';
    assert_false(static_host_valid(long_host));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(only_embedded_names_are_found),
        cmocka_unit_test(every_embedded_file_has_a_type_and_an_etag),
        cmocka_unit_test(only_a_plain_host_reaches_the_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
