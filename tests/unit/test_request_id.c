/* Unit tests of request ids: which ids a client may choose, and the shape of our own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/request_id.h"
#include "privsep/protocol.h"

static void valid_ids(void **state)
{
    (void)state;
    assert_true(request_id_valid("a"));
    assert_true(request_id_valid("trace-01.A_b"));
    char max[REQUEST_ID_MAX + 2];
    memset(max, 'x', REQUEST_ID_MAX);
    max[REQUEST_ID_MAX] = '\0';
    assert_true(request_id_valid(max));
    max[REQUEST_ID_MAX] = 'x';
    max[REQUEST_ID_MAX + 1] = '\0';
    assert_false(request_id_valid(max)); /* 65 characters */
    assert_false(request_id_valid(NULL));
    assert_false(request_id_valid(""));
    assert_false(request_id_valid("has space"));
    assert_false(request_id_valid("new\nline"));
    assert_false(request_id_valid("quote\""));
    assert_false(request_id_valid("slash/"));
    assert_false(request_id_valid("caf\xc3\xa9"));
}

static void made_ids_are_valid_and_distinct(void **state)
{
    (void)state;
    char a[REQUEST_ID_MAX + 1], b[REQUEST_ID_MAX + 1];
    request_id_make(a, 0xdeadbeef, 1);
    request_id_make(b, 0xdeadbeef, 2);
    assert_string_equal(a, "deadbeef00000001");
    assert_true(request_id_valid(a));
    assert_string_not_equal(a, b);
}

/* A PS_RUN message running "true", with the request id field given. */
static size_t run_message(struct ps_request *req, const char *id, size_t id_len)
{
    memset(req, 0, PS_MAX_MSG);
    req->h.magic = PS_MAGIC;
    req->h.type = PS_RUN;
    struct ps_run *r = &req->u.run;
    r->limits = (struct ps_limits){.wall_time_us = 1000000,
                                   .cpu_time_us = 1000000,
                                   .memory_kb = 65536,
                                   .max_open_files = 64,
                                   .max_file_size_kb = 1024,
                                   .max_processes = 16,
                                   .max_output_bytes = 1024,
                                   .tmp_kb = 1024};
    memcpy(r->request_id, id, id_len);
    size_t head = offsetof(struct ps_request, u) + sizeof(*r);
    memcpy((char *)req + head, "true", 5);
    r->argc = 1;
    r->strings_len = 5;
    return head + 5;
}

static void helper_checks_the_request_id(void **state)
{
    (void)state;
    struct ps_request *req = malloc(PS_MAX_MSG);
    assert_non_null(req);
    char *argv[PS_MAX_ARGS + 1], *envp[PS_MAX_ENV + 1];
    struct ev_err err;
    size_t n = run_message(req, "", 0);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), 0); /* none */
    n = run_message(req, "abc-1.2_3", 10);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), 0);
    n = run_message(req, "bad\nid", 7);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    assert_non_null(strstr(err.msg, "request id"));
    char full[PS_REQUEST_ID_SIZE];
    memset(full, 'a', sizeof(full)); /* not NUL-terminated */
    n = run_message(req, full, sizeof(full));
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    /* 65 valid characters, terminated: longer than an id may be */
    full[REQUEST_ID_MAX + 1] = '\0';
    n = run_message(req, full, REQUEST_ID_MAX + 2);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    free(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_ids),
        cmocka_unit_test(made_ids_are_valid_and_distinct),
        cmocka_unit_test(helper_checks_the_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
