/* Unit tests of the API extensions: bounds on limits, per-runtime limits and ids in POST
 * /runtimes, the runtime hash's canonical form, SHA-256, constant-time comparison and API
 * keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sha256.h"
#include "http/auth.h"
#include "http/request.h"
#include "http/routes.h"
#include "pipeline/config.h"
#include "pipeline/runtime_info.h"

static const struct ev_limits sys_max = {60000000, 30000000, 5000000, 1000000, 64, 100000, 64};

static void check_limit(int i, double v, const char *expected, uint64_t expect_value)
{
    uint64_t out = 0;
    struct ev_err err;
    int r = limit_check(i, v,
                        i == LIM_MEMORY      ? 1000000
                        : i == LIM_WALL_TIME ? 60000000
                                             : 64,
                        "run", &out, &err);
    if (expected) {
        assert_int_equal(r, -1);
        assert_string_equal(err.msg, expected);
    } else {
        assert_int_equal(r, 0);
        assert_int_equal(out, expect_value);
    }
}

static void test_limit_bounds(void **state)
{
    (void)state;
    const char *wt =
        "Invalid run limits: wall_time must be a number of seconds from 0.000001 to 60";
    const char *mem =
        "Invalid run limits: memory must be a whole number of kilobytes from 1 to 1000000";
    check_limit(LIM_WALL_TIME, 0, wt, 0);
    check_limit(LIM_WALL_TIME, -0.0, wt, 0);
    check_limit(LIM_WALL_TIME, -1, wt, 0);
    check_limit(LIM_WALL_TIME, NAN, wt, 0);
    check_limit(LIM_WALL_TIME, INFINITY, wt, 0);
    check_limit(LIM_WALL_TIME, -INFINITY, wt, 0);
    check_limit(LIM_WALL_TIME, 4e-7, wt, 0); /* rounds to 0 us */
    check_limit(LIM_WALL_TIME, 6e-7, NULL, 1);
    check_limit(LIM_WALL_TIME, 1e300, "Invalid run limits: wall_time can't exceed 60 seconds", 0);
    check_limit(LIM_WALL_TIME, 60.0000004, "Invalid run limits: wall_time can't exceed 60 seconds",
                0);
    check_limit(LIM_WALL_TIME, 60, NULL, 60000000);
    check_limit(LIM_WALL_TIME, 0.25, NULL, 250000);
    check_limit(LIM_MEMORY, 0, mem, 0);
    check_limit(LIM_MEMORY, 1.5, mem, 0);
    check_limit(LIM_MEMORY, NAN, mem, 0);
    check_limit(LIM_MEMORY, 18446744073709551616.0,
                "Invalid run limits: memory can't exceed 1000000 kilobytes", 0);
    check_limit(LIM_MEMORY, 1, NULL, 1);
    check_limit(LIM_MAX_OPEN_FILES, 0,
                "Invalid run limits: max_open_files must be a whole number from 1 to 64", 0);
    uint64_t out;
    struct ev_err err;
    assert_int_equal(limit_check(LIM_EXTRA_TIME, 0, 5000000, "compile", &out, &err), 0);
    assert_int_equal(out, 0);
    assert_int_equal(limit_check(LIM_EXTRA_TIME, -0.1, 5000000, "compile", &out, &err), -1);
    assert_string_equal(
        err.msg, "Invalid compile limits: extra_time must be a number of seconds from 0 to 5");
    assert_int_equal(limit_check(LIM_CPU_TIME, 3, 2500000, "run", &out, &err), -1);
    assert_string_equal(err.msg, "Invalid run limits: cpu_time can't exceed 2.5 seconds");
}

static void test_format_seconds(void **state)
{
    (void)state;
    char b[32];
    format_seconds(60000000, b, sizeof(b));
    assert_string_equal(b, "60");
    format_seconds(1500, b, sizeof(b));
    assert_string_equal(b, "0.0015");
    format_seconds(1, b, sizeof(b));
    assert_string_equal(b, "0.000001");
    format_seconds(2500000, b, sizeof(b));
    assert_string_equal(b, "2.5");
}

static void test_limits_override(void **state)
{
    (void)state;
    struct limit_override o = {0};
    o.present[LIM_MEMORY] = true;
    o.value[LIM_MEMORY] = 262144;
    o.present[LIM_MAX_OPEN_FILES] = true;
    o.value[LIM_MAX_OPEN_FILES] = 100; /* above the system's: never raises it */
    struct ev_limits l;
    limits_override(&sys_max, &o, &l);
    assert_int_equal(l.memory_kb, 262144);
    assert_int_equal(l.max_open_files, 64);
    assert_int_equal(l.wall_time_us, 60000000);
    struct ev_err err;
    struct limit_request req = {0};
    req.present[LIM_MEMORY] = true;
    req.value[LIM_MEMORY] = 262145;
    struct ev_limits out;
    assert_int_equal(limits_resolve(&req, &l, "run", &out, &err), -1);
    assert_string_equal(err.msg, "Invalid run limits: memory can't exceed 262144 kilobytes");
}

static void test_parse_runtime_options(void **state)
{
    (void)state;
    struct runtime rt;
    struct ev_err err;
    memset(&rt, 0, sizeof(rt));
    const char *ok = "{\"id\":7,\"run_limits\":{\"memory\":1024,\"wall_time\":1.5},"
                     "\"compile_limits\":{\"extra_time\":0}}";
    assert_int_equal(parse_runtime_options(ok, strlen(ok), &sys_max, &sys_max, &rt, &err), 0);
    assert_int_equal(rt.id, 7);
    assert_true(rt.run_limits.present[LIM_MEMORY]);
    assert_int_equal(rt.run_limits.value[LIM_MEMORY], 1024);
    assert_int_equal(rt.run_limits.value[LIM_WALL_TIME], 1500000);
    assert_false(rt.run_limits.present[LIM_CPU_TIME]);
    assert_true(rt.compile_limits.present[LIM_EXTRA_TIME]);
    assert_int_equal(rt.compile_limits.value[LIM_EXTRA_TIME], 0);
    const char *bad[][2] = {
        {"{\"id\":0}", "id must be an integer from 1 to 9007199254740991"},
        {"{\"id\":\"3\"}", "id must be an integer from 1 to 9007199254740991"},
        {"{\"id\":9007199254740992}", "id must be an integer from 1 to 9007199254740991"},
        {"{\"run_limits\":{\"memory\":1000001}}",
         "Invalid run limits: memory can't exceed 1000000 kilobytes"},
        {"{\"compile_limits\":{\"wall_time\":\"1\"}}",
         "Invalid compile limits: wall_time must be a number of seconds from 0.000001 to 60"},
        {"{\"run_limits\":[]}", "run_limits must be an object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(
            parse_runtime_options(bad[i][0], strlen(bad[i][0]), &sys_max, &sys_max, &rt, &err), -1);
        assert_string_equal(err.msg, bad[i][1]);
    }
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    unsigned char d[SHA256_LEN];
    char hex[65];
    sha256("", 0, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256("abc", 3, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256(m, strlen(m), d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* a million 'a', fed in uneven pieces */
    struct sha256 c;
    sha256_init(&c);
    char a[997];
    memset(a, 'a', sizeof(a));
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof(a) ? left : sizeof(a);
        sha256_update(&c, a, n);
        left -= n;
    }
    sha256_final(&c, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(ct_equal("abcd", "abcd", 4));
    assert_false(ct_equal("abcd", "abce", 4));
    assert_false(ct_equal("xbcd", "abcd", 4));
    assert_true(ct_equal("", "", 0));
}

static const char *keys_env[2];

static const char *fake_keys(const char *name)
{
    if (strcmp(name, "ADMIN_API_KEYS") == 0)
        return keys_env[0];
    if (strcmp(name, "EXECUTE_API_KEYS") == 0)
        return keys_env[1];
    return NULL;
}

static void test_auth(void **state)
{
    (void)state;
    struct auth_keys k;
    struct ev_err err;
    keys_env[0] = keys_env[1] = NULL;
    assert_int_equal(auth_load(&k, fake_keys, &err), 0);
    assert_false(auth_enabled(&k));
    const char *m;
    assert_int_equal(auth_check(&k, route_role("POST", "/runtimes"), NULL, NULL, &m), 0);

    const char *bad[][2] = {{"adminkey1,,adminkey2", NULL},
                            {"adminkey1,", NULL},
                            {"", NULL},
                            {NULL, " execkey1"},
                            {NULL, "exec key1"},
                            {NULL, "short"},
                            {NULL, "execkey1\t"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        keys_env[0] = bad[i][0];
        keys_env[1] = bad[i][1];
        assert_int_equal(auth_load(&k, fake_keys, &err), -1);
        assert_non_null(strstr(err.msg, bad[i][0] ? "ADMIN_API_KEYS" : "EXECUTE_API_KEYS"));
        assert_null(strstr(err.msg, "key1"));
    }

    keys_env[0] = "adminkey1,adminkey2";
    keys_env[1] = "execkey1";
    assert_int_equal(auth_load(&k, fake_keys, &err), 0);
    assert_int_equal(k.n, 3);
    assert_int_equal(auth_lookup(&k, "adminkey2"), AUTH_ADMIN);
    assert_int_equal(auth_lookup(&k, "execkey1"), AUTH_EXECUTE);
    assert_int_equal(auth_lookup(&k, "execkey"), AUTH_NONE);
    assert_int_equal(auth_lookup(&k, "execkey12"), AUTH_NONE);
    assert_int_equal(auth_lookup(&k, ""), AUTH_NONE);

    assert_int_equal(route_role("GET", "/health"), AUTH_NONE);
    assert_int_equal(route_role("POST", "/health"), AUTH_ADMIN);
    assert_int_equal(route_role("GET", "/runtimes"), AUTH_EXECUTE);
    assert_int_equal(route_role("GET", "/runtimes/3"), AUTH_EXECUTE);
    assert_int_equal(route_role("POST", "/execute"), AUTH_EXECUTE);
    assert_int_equal(route_role("POST", "/runtimes"), AUTH_ADMIN);
    assert_int_equal(route_role("DELETE", "/runtimes/3"), AUTH_ADMIN);
    assert_int_equal(route_role("POST", "/update"), AUTH_ADMIN);
    assert_int_equal(route_role("POST", "/gc"), AUTH_ADMIN);
    /* test files belong to those who execute; only the upload is bounded as a file */
    assert_int_equal(route_role("POST", "/files"), AUTH_EXECUTE);
    assert_int_equal(route_role("GET", "/files/00"), AUTH_EXECUTE);
    assert_int_equal(route_role("DELETE", "/files/00"), AUTH_EXECUTE);
    assert_int_equal(route_role("PUT", "/files/00"), AUTH_ADMIN);
    bool known;
    assert_int_equal(route_find("POST", "/files", &known)->body, BODY_STORE);
    assert_int_equal(route_find("GET", "/files/00", &known)->body, BODY_MEMORY);
    assert_int_equal(route_find("POST", "/execute", &known)->body, BODY_FILE);
    assert_int_equal(route_role("POST", "/anything-new"), AUTH_ADMIN);

    assert_int_equal(auth_check(&k, route_role("GET", "/health"), NULL, NULL, &m), 0);
    assert_int_equal(auth_check(&k, route_role("GET", "/runtimes"), NULL, NULL, &m), 401);
    assert_int_equal(auth_check(&k, route_role("GET", "/runtimes"), "Bearer nope-nope", NULL, &m),
                     401);
    assert_int_equal(auth_check(&k, route_role("GET", "/runtimes"), "Basic execkey1", NULL, &m),
                     401);
    assert_int_equal(auth_check(&k, route_role("GET", "/runtimes"), "Bearer execkey1", NULL, &m),
                     0);
    assert_int_equal(auth_check(&k, route_role("GET", "/runtimes"), "bearer execkey1", NULL, &m),
                     0);
    assert_int_equal(auth_check(&k, route_role("GET", "/runtimes"), NULL, "execkey1", &m), 0);
    assert_int_equal(auth_check(&k, route_role("POST", "/runtimes"), NULL, "execkey1", &m), 403);
    assert_int_equal(auth_check(&k, route_role("POST", "/gc"), "Bearer execkey1", NULL, &m), 403);
    assert_int_equal(auth_check(&k, route_role("POST", "/gc"), "Bearer adminkey1", NULL, &m), 0);
    auth_free(&k);
}

static void fill_runtime(struct runtime *rt, const char *name, const char *env, size_t env_len)
{
    memset(rt, 0, sizeof(*rt));
    rt->name = (char *)name;
    rt->provider = "host";
    rt->source_file_name = "main.py";
    rt->compile_script = "";
    rt->run_script = "python3 main.py";
    rt->nix_shell = "";
    rt->env = (char *)env;
    rt->env_len = env_len;
}

static void test_runtime_canonical_and_hash(void **state)
{
    (void)state;
    struct ev_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.compile = sys_max;
    cfg.run = sys_max;
    struct runtime a, b;
    fill_runtime(&a, "A", "X=1\0Y=\xc3\xa9", 9); /* the literal's 8 bytes and its NUL */
    fill_runtime(&b, "B", "Y=\xc3\xa9\0X=1", 9);
    a.id = 1;
    b.id = 2;
    a.created_at = 100;
    char *text = runtime_canonical(&a, &cfg);
    assert_non_null(text);
    assert_string_equal(
        text,
        "{\"compile_limits\":{\"cpu_time_us\":30000000,\"extra_time_us\":5000000,"
        "\"max_file_size_kb\":100000,\"max_number_of_processes\":64,\"max_open_files\":64,"
        "\"memory_kb\":1000000,\"wall_time_us\":60000000},\"compile_script\":\"\","
        "\"env\":{\"X\":\"1\",\"Y\":\"\\u00E9\"},\"format\":\"envicutor-runtime-v1\","
        "\"nix_shell\":\"\",\"provider\":\"host\",\"run_limits\":{\"cpu_time_us\":30000000,"
        "\"extra_time_us\":5000000,\"max_file_size_kb\":100000,\"max_number_of_processes\":64,"
        "\"max_open_files\":64,\"memory_kb\":1000000,\"wall_time_us\":60000000},"
        "\"run_script\":\"python3 main.py\",\"source_file_name\":\"main.py\"}");
    free(text);
    char ha[72], hb[72];
    assert_int_equal(runtime_hash(&a, &cfg, ha), 0);
    assert_int_equal(runtime_hash(&b, &cfg, hb), 0);
    assert_string_equal(ha, hb); /* name, id, time and env order do not count */
    assert_int_equal(strlen(ha), 71);
    b.run_script = "python3 -O main.py";
    assert_int_equal(runtime_hash(&b, &cfg, hb), 0);
    assert_string_not_equal(ha, hb);
    b.run_script = a.run_script;
    b.run_limits.present[LIM_MEMORY] = true;
    b.run_limits.value[LIM_MEMORY] = 999999;
    assert_int_equal(runtime_hash(&b, &cfg, hb), 0);
    assert_string_not_equal(ha, hb);
    /* the same limit reached by the system's value instead of the runtime's: same behaviour */
    struct ev_config cfg2 = cfg;
    cfg2.run.memory_kb = 999999;
    assert_int_equal(runtime_hash(&a, &cfg2, ha), 0);
    assert_string_equal(ha, hb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_bounds),
        cmocka_unit_test(test_format_seconds),
        cmocka_unit_test(test_limits_override),
        cmocka_unit_test(test_parse_runtime_options),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_runtime_canonical_and_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
