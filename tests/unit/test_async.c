/* Unit tests of what asynchronous submissions take from clients: tokens (their shape, their
 * encoding, that fresh ones differ) and callback URLs (what is accepted, what is refused and
 * which addresses count as public). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "common/token.h"
#include "common/url.h"

static void token_encoding(void **state)
{
    (void)state;
    unsigned char raw[TOKEN_BYTES];
    char t[TOKEN_LEN + 1];
    memset(raw, 0, sizeof(raw));
    token_encode(raw, t);
    assert_string_equal(t, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    memset(raw, 0xff, sizeof(raw));
    token_encode(raw, t);
    assert_string_equal(t, "________________________________");
    /* 0xfb 0xef 0xbe: 111110 111110 111110 111110, the URL-safe 62nd character */
    for (size_t i = 0; i < TOKEN_BYTES; i += 3) {
        raw[i] = 0xfb;
        raw[i + 1] = 0xef;
        raw[i + 2] = 0xbe;
    }
    token_encode(raw, t);
    assert_string_equal(t, "--------------------------------");
    assert_true(token_valid(t));
}

static void token_shape(void **state)
{
    (void)state;
    assert_true(token_valid("abcdefghijklmnopqrstuvwxyz012345"));
    assert_true(token_valid("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_6789"));
    assert_false(token_valid(NULL));
    assert_false(token_valid(""));
    assert_false(token_valid("abcdefghijklmnopqrstuvwxyz01234"));   /* 31 */
    assert_false(token_valid("abcdefghijklmnopqrstuvwxyz0123456")); /* 33 */
    assert_false(token_valid("abcdefghijklmnopqrstuvwxyz01234/"));
    assert_false(token_valid("abcdefghijklmnopqrstuvwxyz01234."));
    assert_false(token_valid("abcdefghijklmnopqrstuvwxyz01234="));
    assert_false(token_valid("abcdefghijklmnopqrstuvwxyz01234+"));
}

static void fresh_tokens_differ(void **state)
{
    (void)state;
    char a[TOKEN_LEN + 1], b[TOKEN_LEN + 1];
    struct ev_err err;
    assert_int_equal(token_make(a, &err), 0);
    assert_int_equal(token_make(b, &err), 0);
    assert_true(token_valid(a));
    assert_true(token_valid(b));
    assert_string_not_equal(a, b);
}

static void urls_accepted(void **state)
{
    (void)state;
    struct http_url u;
    struct ev_err err;
    assert_int_equal(url_parse_http("http://example.com", &u, &err), 0);
    assert_string_equal(u.host, "example.com");
    assert_string_equal(u.port, "80");
    assert_string_equal(u.path, "/");
    assert_int_equal(url_parse_http("HTTP://Hooks.example.com:8080/a/b?c=d&e", &u, &err), 0);
    assert_string_equal(u.host, "Hooks.example.com");
    assert_string_equal(u.port, "8080");
    assert_string_equal(u.path, "/a/b?c=d&e");
    assert_int_equal(url_parse_http("http://10.0.0.1?x", &u, &err), 0);
    assert_string_equal(u.host, "10.0.0.1");
    assert_string_equal(u.path, "/?x");
    assert_int_equal(url_parse_http("http://[2001:db8::1]:81/p", &u, &err), 0);
    assert_string_equal(u.host, "2001:db8::1");
    assert_string_equal(u.port, "81");
    assert_string_equal(u.path, "/p");
    assert_int_equal(url_parse_http("http://h:65535/", &u, &err), 0);
    assert_string_equal(u.port, "65535");
}

static void urls_refused(void **state)
{
    (void)state;
    struct http_url u;
    struct ev_err err;
    static const struct {
        const char *url, *words;
    } bad[] = {
        {"https://example.com/", "https is not supported"},
        {"HTTPS://example.com/", "https is not supported"},
        {"ftp://example.com/", "http://"},
        {"example.com", "http://"},
        {"http://", "no host"},
        {"http:///x", "no host"},
        {"http://:80/", "no host"},
        {"http://user@example.com/", "user name"},
        {"http://a:b@example.com/", "user name"},
        {"http://example.com/#f", "fragment"},
        {"http://exa mple.com/", "printable"},
        {"http://example.com/\r\nX-Injected: 1", "printable"},
        {"http://example.com/\xc3\xa9", "printable"},
        {"http://example.com:0/", "port"},
        {"http://example.com:65536/", "port"},
        {"http://example.com:123456/", "port"},
        {"http://example.com:065535/", "port"}, /* more than five digits */
        {"http://example.com:/", "port"},
        {"http://example.com:80x/", "after the host"},
        {"http://exa_mple.com/", "host name"},
        {"http://-example.com/", "host name"},
        {"http://[::1/", "closing"},
        {"http://[not-v6]/", "IPv6"},
        {"http://[]/", "IPv6"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (url_parse_http(bad[i].url, &u, &err) != -1 || !strstr(err.msg, bad[i].words))
            fail_msg("%s: %s", bad[i].url, err.msg);
    }
    char longer[URL_MAX + 10];
    memset(longer, 'a', sizeof(longer));
    memcpy(longer, "http://h/", 9);
    longer[sizeof(longer) - 1] = '\0';
    assert_int_equal(url_parse_http(longer, &u, &err), -1);
    assert_non_null(strstr(err.msg, "longer"));
}

static bool public4(const char *a)
{
    struct sockaddr_in s = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, a, &s.sin_addr), 1);
    return addr_is_public((struct sockaddr *)&s);
}

static bool public6(const char *a)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
    return addr_is_public((struct sockaddr *)&s);
}

static void public_addresses(void **state)
{
    (void)state;
    const char *priv4[] = {"127.0.0.1",      "127.255.0.3", "10.1.2.3",        "172.16.0.1",
                           "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                           "0.0.0.0",        "224.0.0.1",   "255.255.255.255", "240.0.0.1",
                           "192.0.0.8",      "198.18.0.1"};
    for (size_t i = 0; i < sizeof(priv4) / sizeof(priv4[0]); i++)
        if (public4(priv4[i]))
            fail_msg("%s taken for public", priv4[i]);
    assert_true(public4("8.8.8.8"));
    assert_true(public4("172.32.0.1"));
    assert_true(public4("100.128.0.1"));
    assert_true(public4("193.0.0.1"));
    const char *priv6[] = {"::1",           "::",      "fc00::1",          "fd12:3456::1",
                           "fe80::1",       "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                           "64:ff9b::a00:1"};
    for (size_t i = 0; i < sizeof(priv6) / sizeof(priv6[0]); i++)
        if (public6(priv6[i]))
            fail_msg("%s taken for public", priv6[i]);
    assert_true(public6("2001:4860:4860::8888"));
    assert_true(public6("::ffff:8.8.8.8"));
    struct sockaddr unix_addr = {.sa_family = AF_UNIX};
    assert_false(addr_is_public(&unix_addr));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(token_encoding),      cmocka_unit_test(token_shape),
        cmocka_unit_test(fresh_tokens_differ), cmocka_unit_test(urls_accepted),
        cmocka_unit_test(urls_refused),        cmocka_unit_test(public_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
