/* Unit tests of REDIS_URL: what redis_url_parse accepts, what it makes of it, and that the
 * configuration refuses a malformed one with a message naming the variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/redis_url.h"
#include "pipeline/config.h"

static void accepted(void **state)
{
    (void)state;
    struct redis_addr a;
    struct ev_err err;
    assert_int_equal(redis_url_parse("redis://127.0.0.1:6380/2", &a, &err), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 2);
    assert_int_equal(redis_url_parse("redis://cache.internal", &a, &err), 0);
    assert_string_equal(a.host, "cache.internal");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_int_equal(redis_url_parse("redis://h:1/", &a, &err), 0);
    assert_int_equal(a.port, 1);
    assert_int_equal(redis_url_parse("redis://[::1]:7000", &a, &err), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 7000);
}

static void refused(void **state)
{
    (void)state;
    struct redis_addr a;
    struct ev_err err;
    const char *bad[] = {"",
                         "http://h:1",
                         "redis://",
                         "redis://:6379",
                         "redis://h:0",
                         "redis://h:65536",
                         "redis://h:12x",
                         "redis://h:",
                         "redis://h/16",
                         "redis://h/x",
                         "redis://user:pw@h:1",
                         "redis://h:1/0/extra",
                         "redis://[::1",
                         "redis://[]:1",
                         "redis://h h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(redis_url_parse(bad[i], &a, &err), -1);
        assert_non_null(strstr(err.msg, "REDIS_URL"));
    }
    assert_int_equal(redis_url_parse(NULL, &a, &err), -1);
}

static const char *url_env;

static const char *lookup(const char *name)
{
    if (strcmp(name, "REDIS_URL") == 0)
        return url_env;
    if (strcmp(name, "JOB_MAX_ATTEMPTS") == 0)
        return "0";
    return NULL;
}

static const char *lookup_ok(const char *name)
{
    return strcmp(name, "REDIS_URL") == 0 ? url_env : NULL;
}

static void configuration(void **state)
{
    (void)state;
    static struct ev_config cfg;
    struct ev_err err;
    url_env = NULL;
    assert_int_equal(config_load(&cfg, lookup_ok, &err), 0);
    assert_string_equal(cfg.redis_url, "");
    assert_int_equal(cfg.job_reclaim_seconds, 30);
    assert_int_equal(cfg.job_max_attempts, 3);
    url_env = "redis://10.0.0.5:6379/1";
    assert_int_equal(config_load(&cfg, lookup_ok, &err), 0);
    assert_string_equal(cfg.redis_url, "redis://10.0.0.5:6379/1");
    url_env = "redis://10.0.0.5:99999";
    assert_int_equal(config_load(&cfg, lookup_ok, &err), -1);
    assert_non_null(strstr(err.msg, "REDIS_URL: the port"));
    url_env = "redis://h";
    assert_int_equal(config_load(&cfg, lookup, &err), -1);
    assert_non_null(strstr(err.msg, "JOB_MAX_ATTEMPTS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepted),
        cmocka_unit_test(refused),
        cmocka_unit_test(configuration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
