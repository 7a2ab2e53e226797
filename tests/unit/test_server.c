/* Unit tests of the server's bookkeeping and parsers: configuration, limits, the scheduler's
 * queue, request bodies and the privileged helper's message checks. */
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
#include <unistd.h>

#include "http/request.h"
#include "http/reply.h"
#include "http/routes.h"
#include "pipeline/config.h"
#include "pipeline/scheduler.h"
#include "pipeline/runtime_store.h"
#include "privsep/protocol.h"

/* ---- configuration ----------------------------------------------------------------------- */

static const char *fake_env[16][2];

static const char *fake_getenv(const char *name)
{
    for (int i = 0; i < 16 && fake_env[i][0]; i++)
        if (strcmp(fake_env[i][0], name) == 0)
            return fake_env[i][1];
    return NULL;
}

static void set_env(const char *name, const char *value)
{
    memset(fake_env, 0, sizeof(fake_env));
    fake_env[0][0] = name;
    fake_env[0][1] = value;
}

static void test_config_defaults(void **state)
{
    (void)state;
    struct ev_config c;
    struct ev_err err = {0};
    set_env("UNRELATED", "x");
    assert_int_equal(config_load(&c, fake_getenv, &err), 0);
    assert_int_equal(c.port, 5000);
    assert_int_equal(c.compile.wall_time_us, 60000000);
    assert_int_equal(c.compile.max_open_files, 512);
    assert_int_equal(c.run.max_open_files, 64);
    assert_int_equal(c.run.max_processes, 64);
    assert_int_equal(c.run.memory_kb, 1000000);
    assert_int_equal(c.max_concurrent, 8);
    assert_string_equal(c.data_dir, "/var/lib/envicutor");
}

static void test_config_errors_name_the_variable(void **state)
{
    (void)state;
    const char *bad[][2] = {{"PORT", "70000"},
                            {"PORT", "5000x"},
                            {"RUN_WALL_TIME", "0"},
                            {"RUN_CPU_TIME", "-3"},
                            {"COMPILE_MEMORY", "1.5"},
                            {"RUN_EXTRA_TIME", "nan"},
                            {"ENVICUTOR_DATA_DIR", "relative"},
                            {"MAX_CONCURRENT_SUBMISSIONS", ""}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ev_config c;
        struct ev_err err = {0};
        set_env(bad[i][0], bad[i][1]);
        assert_int_equal(config_load(&c, fake_getenv, &err), -1);
        assert_non_null(strstr(err.msg, bad[i][0]));
    }
    struct ev_config c;
    struct ev_err err = {0};
    set_env("RUN_WALL_TIME", "2.5");
    assert_int_equal(config_load(&c, fake_getenv, &err), 0);
    assert_int_equal(c.run.wall_time_us, 2500000);
}

/* ---- limits ------------------------------------------------------------------------------ */

static void test_limits_resolve(void **state)
{
    (void)state;
    struct ev_limits max = {60000000, 30000000, 5000000, 1000000, 64, 100000, 64}, out;
    struct ev_err err;
    struct limit_request req = {0};
    assert_int_equal(limits_resolve(&req, &max, "run", &out, &err), 0);
    assert_memory_equal(&out, &max, sizeof(max));

    req.present[LIM_WALL_TIME] = true;
    req.value[LIM_WALL_TIME] = 0.25;
    req.present[LIM_EXTRA_TIME] = true;
    req.value[LIM_EXTRA_TIME] = 0;
    assert_int_equal(limits_resolve(&req, &max, "run", &out, &err), 0);
    assert_int_equal(out.wall_time_us, 250000);
    assert_int_equal(out.extra_time_us, 0);

    req.value[LIM_WALL_TIME] = 61;
    assert_int_equal(limits_resolve(&req, &max, "run", &out, &err), -1);
    assert_string_equal(err.msg, "Invalid run limits: wall_time can't exceed 60 seconds");

    memset(&req, 0, sizeof(req));
    req.present[LIM_MEMORY] = true;
    req.value[LIM_MEMORY] = 1000001;
    assert_int_equal(limits_resolve(&req, &max, "compile", &out, &err), -1);
    assert_string_equal(err.msg, "Invalid compile limits: memory can't exceed 1000000 kilobytes");
    req.value[LIM_MEMORY] = 10.5;
    assert_int_equal(limits_resolve(&req, &max, "run", &out, &err), -1);
    assert_string_equal(err.msg,
                        "Invalid run limits: memory must be a whole number of kilobytes from 1 to "
                        "1000000");

    memset(&req, 0, sizeof(req));
    req.present[LIM_MAX_OPEN_FILES] = true;
    req.value[LIM_MAX_OPEN_FILES] = 65;
    assert_int_equal(limits_resolve(&req, &max, "run", &out, &err), -1);
    assert_string_equal(err.msg, "Invalid run limits: max_open_files can't exceed 64");
    req.value[LIM_MAX_OPEN_FILES] = 0;
    assert_int_equal(limits_resolve(&req, &max, "run", &out, &err), -1);
    assert_string_equal(err.msg,
                        "Invalid run limits: max_open_files must be a whole number from 1 to 64");
}

/* ---- scheduler --------------------------------------------------------------------------- */

static void test_scheduler_fifo_and_exclusive(void **state)
{
    (void)state;
    struct sched s;
    sched_init(&s, 2, &(struct sched_bounds){3, UINT64_MAX, UINT64_MAX});
    struct sched_ticket a, b, x, c, d, e;
    assert_int_equal(sched_enqueue(&s, &a, SCHED_SUBMISSION), SCHED_GRANTED);
    assert_true(a.granted);
    assert_int_equal(sched_enqueue(&s, &b, SCHED_SUBMISSION), SCHED_GRANTED);
    assert_true(b.granted);
    /* exclusive work waits for both, and holds back the submission behind it */
    assert_int_equal(sched_enqueue(&s, &x, SCHED_EXCLUSIVE), SCHED_GRANTED);
    assert_false(x.granted);
    assert_int_equal(sched_enqueue(&s, &c, SCHED_SUBMISSION), SCHED_GRANTED);
    assert_false(c.granted);
    assert_int_equal(sched_enqueue(&s, &d, SCHED_SUBMISSION), SCHED_GRANTED);
    assert_false(d.granted);
    /* three waiting: the queue is full */
    assert_int_equal(sched_enqueue(&s, &e, SCHED_SUBMISSION), SCHED_FULL);

    sched_release(&s, SCHED_SUBMISSION);
    assert_false(x.granted); /* one is still running */
    sched_release(&s, SCHED_SUBMISSION);
    assert_true(x.granted);
    assert_false(c.granted);
    sched_release(&s, SCHED_EXCLUSIVE);
    assert_true(c.granted);
    assert_true(d.granted);
    assert_int_equal(s.running, 2);
    assert_int_equal(s.waiting, 0);
    sched_destroy(&s);
}

static unsigned notified, notified_granted;
static void count_notify(struct sched_ticket *t)
{
    notified++;
    notified_granted += t->granted;
}

/* Job tickets: the queue is bounded by what its requests hold, a grant is told to the owner,
 * and a stop refuses them all. */
static void test_scheduler_job_costs(void **state)
{
    (void)state;
    struct sched s;
    sched_init(&s, 1, &(struct sched_bounds){UINT32_MAX, 100, 1000});
    struct sched_ticket a = {.notify = count_notify, .tag = 1, .mem = 100};
    struct sched_ticket b = {.notify = count_notify, .tag = 2, .mem = 60};
    struct sched_ticket c = {.notify = count_notify, .tag = 3, .mem = 40, .spilled = 1000};
    struct sched_ticket d = {.notify = count_notify, .tag = 4, .mem = 1};
    struct sched_ticket e = {.notify = count_notify, .tag = 5, .spilled = 1};
    notified = notified_granted = 0;
    /* a runs at once: a running request's body does not count against the queue */
    assert_int_equal(sched_enqueue_job(&s, &a, SCHED_SUBMISSION), SCHED_GRANTED);
    assert_true(a.granted);
    assert_int_equal(sched_enqueue_job(&s, &b, SCHED_SUBMISSION), SCHED_GRANTED);
    assert_int_equal(sched_enqueue_job(&s, &c, SCHED_SUBMISSION), SCHED_GRANTED);
    assert_int_equal(s.mem, 100);
    assert_int_equal(s.spilled, 1000);
    assert_int_equal(sched_enqueue_job(&s, &d, SCHED_SUBMISSION), SCHED_FULL); /* memory */
    assert_int_equal(sched_enqueue_job(&s, &e, SCHED_SUBMISSION), SCHED_FULL); /* spilled */
    assert_int_equal(notified, 0);
    assert_ptr_equal(sched_find_tag(&s, 3), &c);
    assert_null(sched_find_tag(&s, 1)); /* granted: not waiting */
    sched_withdraw(&s, &c);
    assert_int_equal(s.spilled, 0);
    assert_int_equal(sched_enqueue_job(&s, &e, SCHED_SUBMISSION), SCHED_GRANTED);
    sched_release(&s, SCHED_SUBMISSION); /* a ends: b gets its turn, and is told */
    assert_true(b.granted);
    assert_int_equal(notified, 1);
    assert_int_equal(notified_granted, 1);
    assert_int_equal(s.mem, 0);
    sched_stop(&s); /* e still waits: refused */
    assert_int_equal(notified, 2);
    assert_int_equal(notified_granted, 1);
    assert_false(e.granted);
    assert_null(s.head);
    assert_null(s.tail);
    assert_int_equal(s.waiting, 0);
    sched_destroy(&s);
}

static void test_scheduler_withdraw_lets_the_next_start(void **state)
{
    (void)state;
    struct sched s;
    sched_init(&s, 1, &(struct sched_bounds){4, UINT64_MAX, UINT64_MAX});
    struct sched_ticket a, x, b;
    sched_enqueue(&s, &a, SCHED_SUBMISSION);
    sched_enqueue(&s, &x, SCHED_EXCLUSIVE);
    sched_enqueue(&s, &b, SCHED_SUBMISSION);
    assert_false(b.granted);
    sched_withdraw(&s, &x);  /* its client went away */
    assert_false(b.granted); /* a still runs: limit 1 */
    assert_int_equal(s.waiting, 1);
    sched_release(&s, SCHED_SUBMISSION);
    assert_true(b.granted);
    /* a stopping scheduler refuses */
    s.stopping = true;
    struct sched_ticket c;
    assert_int_equal(sched_enqueue(&s, &c, SCHED_SUBMISSION), SCHED_STOPPING);
    sched_destroy(&s);
}

/* ---- request bodies ---------------------------------------------------------------------- */

static void check_runtime(const char *body, const char *expected)
{
    struct runtime rt;
    struct ev_err err;
    int r = parse_runtime(body, strlen(body), false, &rt, &err);
    if (!expected) {
        assert_int_equal(r, 0);
        runtime_free(&rt);
        return;
    }
    assert_int_equal(r, -1);
    assert_string_equal(err.msg, expected);
}

static void test_parse_runtime(void **state)
{
    (void)state;
    check_runtime("{\"name\":\"\",\"provider\":\"host\"}", "Name can't be empty");
    check_runtime("{\"name\":\"n\"}", "Nix shell can't be empty");
    check_runtime("{\"name\":\"n\",\"provider\":\"host\"}", "Run command can't be empty");
    check_runtime("{\"name\":\"n\",\"provider\":\"host\",\"run_script\":\"x\"}",
                  "Source file name can't be empty");
    const char *bad_names[] = {".", "..", "a/b", "/x", "a\\u0000b"};
    for (size_t i = 0; i < 5; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"name\":\"n\",\"provider\":\"host\",\"run_script\":\"x\","
                 "\"source_file_name\":\"%s\"}",
                 bad_names[i]);
        check_runtime(body, "Invalid source file name");
    }
    check_runtime("{\"name\":\"n\",\"provider\":\"host\",\"run_script\":\"x\","
                  "\"source_file_name\":\"main.py\",\"env\":{\"A\":\"1\\n=2\"}}",
                  NULL);
    check_runtime("{\"name\":\"n\",\"nix_shell\":\"s\",\"run_script\":\"x\","
                  "\"source_file_name\":\"m\"}",
                  "Nix is not available on this server: install Nix, or use \"provider\": "
                  "\"host\" for a runtime on the host's own toolchains");

    struct runtime rt;
    struct ev_err err;
    const char *body = "{\"name\":\"n\",\"provider\":\"host\",\"run_script\":\"x\","
                       "\"source_file_name\":\"m\",\"env\":{\"A\":\"x=y\",\"B\":\" \"}}";
    assert_int_equal(parse_runtime(body, strlen(body), false, &rt, &err), 0);
    assert_int_equal(rt.env_len, strlen("A=x=y") + 1 + strlen("B= ") + 1);
    assert_string_equal(rt.env, "A=x=y");
    assert_string_equal(rt.env + 6, "B= ");
    runtime_free(&rt);
}

static void test_parse_execute(void **state)
{
    (void)state;
    struct execute_body b;
    struct ev_err err;
    const char *ok = "{\"runtime_id\":3,\"source_code\":\"print(1)\",\"input\":\"x\","
                     "\"run_limits\":{\"wall_time\":1.5}}";
    assert_int_equal(parse_execute(ok, strlen(ok), &b, &err), 0);
    assert_int_equal(b.runtime_id, 3);
    assert_string_equal(b.source, "print(1)");
    assert_true(b.run.present[LIM_WALL_TIME]);
    assert_false(b.compile.present[LIM_WALL_TIME]);
    execute_body_free(&b);
    const char *bad[][2] = {
        {"{\"runtime_id\":\"3\",\"source_code\":\"\"}", "runtime_id must be an integer"},
        {"{\"runtime_id\":3}", "source_code is required"},
        {"[]", "The request body must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse_execute(bad[i][0], strlen(bad[i][0]), &b, &err), -1);
        assert_string_equal(err.msg, bad[i][1]);
    }
    assert_int_equal(parse_execute("{", 1, &b, &err), -1);
    assert_memory_equal(err.msg, "Invalid JSON", 12);
    assert_int_equal(parse_id("12"), 12);
    assert_int_equal(parse_id("0"), -1);
    assert_int_equal(parse_id("1a"), -1);
    assert_int_equal(parse_id(""), -1);
    assert_int_equal(parse_id("9999999999999999999"), -1);
}

/* ---- helper messages --------------------------------------------------------------------- */

static size_t build_run(struct ps_request *req, const char *strings, size_t len, uint32_t argc,
                        uint32_t envc)
{
    memset(req, 0, PS_MAX_MSG);
    req->h = (struct ps_header){.magic = PS_MAGIC, .type = PS_RUN};
    struct ps_run *r = &req->u.run;
    r->limits = (struct ps_limits){1000000, 1000000, 0, 10000, 16, 100, 4, 1024, 1024};
    r->argc = argc;
    r->envc = envc;
    r->strings_len = (uint32_t)len;
    size_t head = offsetof(struct ps_request, u) + sizeof(*r);
    memcpy((char *)req + head, strings, len);
    return head + len;
}

static void test_helper_checks_messages(void **state)
{
    (void)state;
    struct ps_request *req = malloc(PS_MAX_MSG);
    assert_non_null(req);
    char *argv[PS_MAX_ARGS + 1], *envp[PS_MAX_ENV + 1];
    struct ev_err err = {0};
    static const char good[] = "bash\0-c\0true\0PATH=/bin\0";
    size_t n = build_run(req, good, sizeof(good) - 1, 3, 1);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), 0);
    assert_string_equal(argv[2], "true");
    assert_null(argv[3]);
    assert_string_equal(envp[0], "PATH=/bin");

    /* a string without its NUL */
    n = build_run(req, good, sizeof(good) - 2, 3, 1);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    /* counts that do not match the strings */
    n = build_run(req, good, sizeof(good) - 1, 2, 1);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    /* an environment entry that is not NAME=VALUE */
    n = build_run(req, good, sizeof(good) - 1, 4, 0);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), 0);
    n = build_run(req, "a\0=x\0", 5, 1, 1);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    /* a descriptor that was not announced; a limit out of range; a bad runtime name */
    n = build_run(req, good, sizeof(good) - 1, 3, 1);
    assert_int_equal(ps_check_request(req, n, 1, argv, envp, &err), -1);
    req->u.run.limits.memory_kb = 0;
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    n = build_run(req, good, sizeof(good) - 1, 3, 1);
    snprintf(req->u.run.runtime, sizeof(req->u.run.runtime), "../etc");
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    /* stdout and files: each announced descriptor comes, and only those; files are plain
     * names, distinct, at most PS_MAX_FILES, for a fresh box only */
    n = build_run(req, good, sizeof(good) - 1, 3, 1);
    req->u.run.has_stdin = 1;
    req->u.run.flags = PS_RUN_STDOUT_FD;
    assert_int_equal(ps_check_request(req, n, 2, argv, envp, &err), 0);
    assert_int_equal(ps_check_request(req, n, 1, argv, envp, &err), -1);
    assert_int_equal(ps_check_request(req, n, 3, argv, envp, &err), -1);
    req->u.run.n_files = 2;
    snprintf(req->u.run.files[0], sizeof(req->u.run.files[0]), "input");
    snprintf(req->u.run.files[1], sizeof(req->u.run.files[1]), "expected_output");
    assert_int_equal(ps_check_request(req, n, 4, argv, envp, &err), -1); /* not fresh */
    assert_string_equal(err.msg, "run: files are for a fresh box only");
    req->u.run.flags |= PS_RUN_FRESH_BOX;
    assert_int_equal(ps_check_request(req, n, 4, argv, envp, &err), 0);
    assert_int_equal(ps_check_request(req, n, 3, argv, envp, &err), -1);
    assert_int_equal(ps_check_request(req, n, 5, argv, envp, &err), -1);
    const char *bad_names[] = {"", ".", "..", "a/b", "input"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        snprintf(req->u.run.files[1], sizeof(req->u.run.files[1]), "%s", bad_names[i]);
        assert_int_equal(ps_check_request(req, n, 4, argv, envp, &err), -1);
    }
    memset(req->u.run.files[1], 'x', sizeof(req->u.run.files[1])); /* no NUL */
    assert_int_equal(ps_check_request(req, n, 4, argv, envp, &err), -1);
    req->u.run.files[1][PS_NAME_MAX] = '\0'; /* the longest name */
    assert_int_equal(ps_check_request(req, n, 4, argv, envp, &err), 0);
    req->u.run.n_files = PS_MAX_FILES + 1;
    assert_int_equal(ps_check_request(req, n, 2 + PS_MAX_FILES + 1, argv, envp, &err), -1);
    req->u.run.n_files = 0;
    req->u.run.flags = 8; /* unknown */
    assert_int_equal(ps_check_request(req, n, 1, argv, envp, &err), -1);
    req->u.run.flags = 0;
    req->u.run.has_stdin = 2;
    assert_int_equal(ps_check_request(req, n, 1, argv, envp, &err), -1);
    /* wrong magic, short message, unknown type */
    n = build_run(req, good, sizeof(good) - 1, 3, 1);
    req->h.magic = 0;
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    assert_int_equal(ps_check_request(req, 3, 0, argv, envp, &err), -1);
    req->h = (struct ps_header){.magic = PS_MAGIC, .type = 99};
    assert_int_equal(ps_check_request(req, sizeof(req->h), 0, argv, envp, &err), -1);

    /* write-file: a plain name only, with its descriptor */
    memset(req, 0, sizeof(*req));
    req->h = (struct ps_header){.magic = PS_MAGIC, .type = PS_WRITE_FILE};
    n = offsetof(struct ps_request, u) + sizeof(req->u.write);
    snprintf(req->u.write.name, sizeof(req->u.write.name), "main.py");
    req->u.write.mode = 0644;
    assert_int_equal(ps_check_request(req, n, 1, argv, envp, &err), 0);
    assert_int_equal(ps_check_request(req, n, 0, argv, envp, &err), -1);
    snprintf(req->u.write.name, sizeof(req->u.write.name), "../x");
    assert_int_equal(ps_check_request(req, n, 1, argv, envp, &err), -1);
    snprintf(req->u.write.name, sizeof(req->u.write.name), "x");
    req->u.write.mode = 04755;
    assert_int_equal(ps_check_request(req, n, 1, argv, envp, &err), -1);
    free(req);
}

static void test_helper_checks_nix_messages(void **state)
{
    (void)state;
    struct ps_request req;
    char *argv[PS_MAX_ARGS + 1], *envp[PS_MAX_ENV + 1];
    struct ev_err err;
    size_t n = offsetof(struct ps_request, u) + sizeof(req.u.nix);
    memset(&req, 0, sizeof(req));
    req.h.magic = PS_MAGIC;
    req.h.type = PS_NIX_INSTALL;
    snprintf(req.u.nix.runtime, sizeof(req.u.nix.runtime), "rt-0123abcd");
    req.u.nix.timeout_s = 120;
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), 0);
    /* exact length, no descriptor */
    assert_int_equal(ps_check_request(&req, n - 1, 0, argv, envp, &err), -1);
    assert_int_equal(ps_check_request(&req, n, 1, argv, envp, &err), -1);
    /* timeout range */
    req.u.nix.timeout_s = 0;
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), -1);
    req.u.nix.timeout_s = PS_MAX_NIX_TIMEOUT + 1;
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), -1);
    req.u.nix.timeout_s = 120;
    /* the runtime directory: a plain name of [a-z0-9-], NUL-terminated, required */
    snprintf(req.u.nix.runtime, sizeof(req.u.nix.runtime), "../etc");
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), -1);
    memset(req.u.nix.runtime, 'a', sizeof(req.u.nix.runtime));
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), -1);
    req.u.nix.runtime[0] = '\0';
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), -1);
    /* update and gc name no runtime */
    req.h.type = PS_NIX_GC;
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), 0);
    req.h.type = PS_NIX_UPDATE;
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), 0);
    snprintf(req.u.nix.runtime, sizeof(req.u.nix.runtime), "rt-0123abcd");
    assert_int_equal(ps_check_request(&req, n, 0, argv, envp, &err), -1);
}

/* ---- the error-object contract (common/error.h) ------------------------------------------ */

/* What an earlier, unrelated call left in an error object the caller did not clear. */
static void stale(struct ev_err *err)
{
    memset(err, 'x', sizeof(*err));
    snprintf(err->msg, sizeof(err->msg), "a stale message from an earlier call");
}

/* What fn writes on stderr (the server's log). */
static void capture_stderr(void (*fn)(void *), void *arg, char *buf, size_t size)
{
    char path[] = "/tmp/envicutor-stderr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    fn(arg);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    ssize_t n = pread(fd, buf, size - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    close(fd);
}

struct status_call {
    enum pipe_status st;
    struct ev_err err;
    struct reply r;
};

static void call_reply_pipe_status(void *arg)
{
    struct status_call *c = arg;
    struct request rq = {.id = 42};
    reply_pipe_status(&c->r, &rq, c->st, &c->err);
}

/* A status the route did not expect comes with an error object nobody filled: the log says
 * so, and never repeats what an earlier call left in it. */
static void test_unexpected_pipeline_status_never_logs_a_stale_error(void **state)
{
    (void)state;
    char log[2048];
    struct status_call c = {.st = PIPE_SETUP_FAILED};
    stale(&c.err);
    capture_stderr(call_reply_pipe_status, &c, log, sizeof(log));
    assert_int_equal(c.r.status, 500);
    json_decref(c.r.json);
    assert_null(strstr(log, "stale"));
    assert_non_null(strstr(log, "unexpected pipeline status"));

    /* PIPE_INTERNAL: the pipeline filled err, and that is what is logged */
    struct status_call d = {.st = PIPE_INTERNAL};
    stale(&d.err);
    snprintf(d.err.msg, sizeof(d.err.msg), "open the database: disk on fire");
    capture_stderr(call_reply_pipe_status, &d, log, sizeof(log));
    assert_int_equal(d.r.status, 500);
    json_decref(d.r.json);
    assert_non_null(strstr(log, "disk on fire"));
}

/* The runtime store with an error object full of an earlier call's leftovers: each call is
 * told a success by its return value, and its results are right. */
static void test_store_with_a_stale_error_object(void **state)
{
    (void)state;
    char dir[] = "/tmp/envicutor-store-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct ev_err err;
    stale(&err);
    struct store *s = store_open(dir, &err);
    assert_non_null(s);
    stale(&err);
    assert_int_equal(store_sweep(s, &err), 0);
    stale(&err);
    bool yes = true;
    assert_int_equal(store_name_taken(s, "shell", &yes, &err), 0);
    assert_false(yes);
    struct runtime rt = {.name = "shell",
                         .provider = "host",
                         .source_file_name = "main.sh",
                         .compile_script = "",
                         .run_script = "bash main.sh",
                         .nix_shell = ""};
    stale(&err);
    assert_int_equal(store_prepare(s, &rt, &err), 0);
    stale(&err);
    enum store_conflict conflict;
    assert_int_equal(store_commit(s, &rt, &conflict, &err), 0);
    assert_int_equal(conflict, STORE_NO_CONFLICT);
    assert_true(rt.id > 0);
    stale(&err);
    assert_int_equal(store_name_taken(s, "shell", &yes, &err), 0);
    assert_true(yes);
    stale(&err);
    assert_int_equal(store_id_taken(s, rt.id, &yes, &err), 0);
    assert_true(yes);
    stale(&err);
    assert_int_equal(store_is_installed(s, rt.id, rt.dir, &yes, &err), 0);
    assert_true(yes);
    /* A second runtime in the way of the first: by name, then by the id a client chose. A
     * conflict is an answer (0), and nothing is written. */
    struct runtime again = rt;
    again.id = 0;
    stale(&err);
    assert_int_equal(store_prepare(s, &again, &err), 0);
    assert_int_equal(store_commit(s, &again, &conflict, &err), 0);
    assert_int_equal(conflict, STORE_NAME_TAKEN);
    again.name = "another";
    again.id = rt.id;
    stale(&err);
    assert_int_equal(store_commit(s, &again, &conflict, &err), 0);
    assert_int_equal(conflict, STORE_ID_TAKEN);
    store_discard(s, again.dir);
    stale(&err);
    struct runtime got;
    bool found = false;
    assert_int_equal(store_get(s, rt.id, &got, &found, &err), 0);
    assert_true(found);
    assert_string_equal(got.run_script, "bash main.sh");
    assert_string_equal(got.dir, rt.dir);
    runtime_free(&got);
    stale(&err);
    struct runtime_summary *list;
    size_t n;
    assert_int_equal(store_list(s, &list, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].name, "shell");
    store_list_free(list, n);
    stale(&err);
    assert_int_equal(store_set_flag(s, "catalog_installed", &err), 0);
    bool flag = false;
    stale(&err);
    assert_int_equal(store_get_flag(s, "catalog_installed", &flag, &err), 0);
    assert_true(flag);
    stale(&err);
    assert_int_equal(store_delete(s, rt.id, &found, &err), 0);
    assert_true(found);
    stale(&err);
    assert_int_equal(store_get(s, rt.id, &got, &found, &err), 0);
    assert_false(found);
    stale(&err);
    assert_int_equal(store_delete(s, rt.id, &found, &err), 0);
    assert_false(found);
    stale(&err);
    assert_int_equal(store_is_installed(s, rt.id, rt.dir, &yes, &err), 0);
    assert_false(yes);
    store_close(s);
    char cmd[100];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* The route table: which handler answers, 404 against 405, and the role each request needs. */
static void test_route_table(void **state)
{
    (void)state;
    bool known;
    const struct route *rt = route_find("GET", "/health", &known);
    assert_non_null(rt);
    assert_int_equal(rt->role, AUTH_NONE);
    assert_null(route_find("POST", "/health", &known));
    assert_true(known); /* 405 */
    assert_null(route_find("GET", "/nowhere", &known));
    assert_false(known); /* 404 */
    assert_null(route_find("GET", "/runtimesX", &known));
    assert_false(known);

    /* "/runtimes/" is the list, never the runtime of an empty id */
    rt = route_find("GET", "/runtimes/", &known);
    assert_non_null(rt);
    assert_ptr_equal(rt->fn, route_runtimes_list);
    assert_null(route_find("DELETE", "/runtimes/", &known));
    assert_true(known);
    assert_null(route_find("DELETE", "/runtimes", &known));
    assert_true(known);
    rt = route_find("GET", "/runtimes/12", &known);
    assert_non_null(rt);
    assert_ptr_equal(rt->fn, route_runtimes_get);
    assert_int_equal(rt->match, ROUTE_PREFIX);
    assert_string_equal("/runtimes/12" + strlen(rt->path), "12");
    rt = route_find("DELETE", "/runtimes/12", &known);
    assert_non_null(rt);
    assert_ptr_equal(rt->fn, route_runtimes_delete);
    assert_null(route_find("POST", "/runtimes/12", &known));
    assert_true(known);

    rt = route_find("POST", "/update", &known);
    assert_non_null(rt);
    assert_ptr_equal(rt->fn, route_update);
    rt = route_find("POST", "/gc", &known);
    assert_non_null(rt);
    assert_ptr_equal(rt->fn, route_gc);
    assert_int_equal(rt->body, BODY_MEMORY);
    assert_int_equal(rt->run, RUN_THREAD);
    rt = route_find("POST", "/execute", &known);
    assert_non_null(rt);
    assert_int_equal(rt->run, RUN_QUEUED);
    assert_int_equal(rt->body, BODY_FILE);
    assert_null(route_find("GET", "/execute", &known));
    assert_true(known);

    /* HEAD needs what GET needs; anything without a route needs an admin key */
    assert_int_equal(route_role("HEAD", "/health"), AUTH_NONE);
    assert_int_equal(route_role("HEAD", "/runtimes/3"), AUTH_EXECUTE);
    assert_int_equal(route_role("GET", "/runtimes/"), AUTH_EXECUTE);
    assert_int_equal(route_role("PUT", "/execute"), AUTH_ADMIN);
    assert_int_equal(route_role("DELETE", "/runtimes/"), AUTH_ADMIN);
    assert_int_equal(route_role("GET", "/nowhere"), AUTH_ADMIN);
}

/* The flags a cluster job carries are read back by the worker's request_flag: the text must
 * name exactly the flags the query set, whatever their order or company. */
static void test_job_flags_text(void **state)
{
    (void)state;
    char out[64];
    struct request rq = {.flags = "base64_output,is_project"};
    request_flags_text(&rq, out, sizeof(out));
    assert_string_equal(out, "is_project,base64_output,");
    struct request back = {.flags = out};
    assert_true(request_flag(&back, "is_project"));
    assert_true(request_flag(&back, "base64_output"));
    rq.flags = "is_projectx,base64";
    request_flags_text(&rq, out, sizeof(out));
    assert_string_equal(out, "");
    rq.flags = NULL;
    request_flags_text(&rq, out, sizeof(out));
    assert_string_equal(out, "");
    rq.flags = "base64_output";
    request_flags_text(&rq, out, sizeof(out));
    assert_string_equal(out, "base64_output,");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_errors_name_the_variable),
        cmocka_unit_test(test_limits_resolve),
        cmocka_unit_test(test_scheduler_fifo_and_exclusive),
        cmocka_unit_test(test_scheduler_withdraw_lets_the_next_start),
        cmocka_unit_test(test_scheduler_job_costs),
        cmocka_unit_test(test_parse_runtime),
        cmocka_unit_test(test_parse_execute),
        cmocka_unit_test(test_helper_checks_messages),
        cmocka_unit_test(test_helper_checks_nix_messages),
        cmocka_unit_test(test_unexpected_pipeline_status_never_logs_a_stale_error),
        cmocka_unit_test(test_store_with_a_stale_error_object),
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_job_flags_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
