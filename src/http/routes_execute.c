/* POST /execute[?is_project=true] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "format/stage_json.h"
#include "http/request.h"
#include "http/reply.h"
#include "http/routes.h"
#include "pipeline/checker.h"
#include "pipeline/runtime_info.h"

static int set_new(json_t *o, const char *key, json_t *v)
{
    return !v || json_object_set_new(o, key, v) < 0 ? -1 : 0;
}

/* Judge mode: "tests", "verdict", and the build of the checker or interactor. */
static int judge_json(json_t *j, const struct judge_outcome *jo, const struct exec_request *req,
                      bool base64_output)
{
    json_t *tests = json_array();
    if (!tests || json_object_set_new(j, "tests", tests) < 0)
        return -1;
    for (size_t i = 0; i < jo->n_tests; i++) {
        const struct judge_test_result *t = &jo->tests[i];
        json_t *o = json_object();
        if (!o || json_array_append_new(tests, o) < 0 ||
            set_new(o, "verdict", json_string(verdict_name(t->verdict))) < 0 ||
            set_new(o, "run", t->ran ? stage_result_json(&t->run, base64_output) : json_null()) <
                0 ||
            (t->message && set_new(o, "checker_message", json_string(t->message)) < 0))
            return -1;
    }
    if (set_new(j, "verdict", json_string(verdict_name(jo->verdict))) < 0)
        return -1;
    const char *who = req->judge->interactor ? "interactor" : req->judge->custom ? "checker" : NULL;
    if (!who)
        return 0;
    json_t *h = json_object();
    if (set_new(j, who, h) < 0)
        return -1;
    static const char *const names[STAGE_COUNT] = {"extract", "compile", "run"};
    json_t *c = jo->helper_ran[STAGE_COMPILE]
                    ? stage_result_json(&jo->helper_res[STAGE_COMPILE], base64_output)
                    : json_null();
    if (c && jo->helper_ran[STAGE_COMPILE] &&
        json_object_set_new(c, "cached", json_boolean(jo->helper_cached)) < 0) {
        json_decref(c);
        c = NULL;
    }
    return set_new(h, names[STAGE_COMPILE], c);
}

static json_t *outcome_json(const struct exec_outcome *o, const struct exec_request *req,
                            bool base64_output)
{
    static const char *const names[STAGE_COUNT] = {"extract", "compile", "run"};
    json_t *j = json_object();
    for (int i = 0; j && i < STAGE_COUNT; i++) {
        json_t *v = o->ran[i] ? stage_result_json(&o->res[i], base64_output) : json_null();
        if (v && i == STAGE_COMPILE && o->ran[i] &&
            json_object_set_new(v, "cached", json_boolean(o->cached)) < 0) {
            json_decref(v);
            v = NULL;
        }
        if (!v || json_object_set_new(j, names[i], v) < 0) {
            json_decref(j);
            j = NULL;
        }
    }
    if (j && o->judge && judge_json(j, o->judge, req, base64_output) < 0) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* A request that passed its checks, waiting for its turn: the runtime as read once, the limits
 * resolved, and the parsed body when it was small. A spilled body is parsed again from its file
 * when the turn comes, so that a waiting request holds disk, not memory (SPEC §5). */
struct exec_job {
    struct execute_body b; /* b.root is NULL while a spilled body waits */
    struct runtime rt;
    struct exec_request req;
    bool base64_output;
    int body_fd;
    /* judge mode: the request's tests and its checker or interactor, read once like rt */
    struct judge_request judge;
    struct judge_program helper;
    struct runtime helper_rt;
};

void exec_job_free(struct exec_job *j)
{
    if (!j)
        return;
    execute_body_free(&j->b);
    runtime_free(&j->rt);
    runtime_free(&j->helper_rt);
    free(j);
}

/* A runtime named by the request: false with the answer in r. */
static bool get_runtime(const struct route_ctx *s, int64_t id, struct runtime *rt,
                        struct request *rq, struct reply *r)
{
    struct ev_err gerr = {0};
    bool found = false, local = true;
    if ((s->cluster || s->registry) && !cluster_runtime(s, id, rt, &local, rq, r)) {
        memset(rt, 0, sizeof(*rt));
        return false;
    }
    if (!local)
        return true;
    int got = store_get(s->pipeline->store, id, rt, &found, &gerr);
    if (got < 0 || !found) {
        if (got < 0)
            reply_internal(r, rq, gerr.msg);
        else
            reply_message(r, 400, "Runtime with id: %lld does not exist", (long long)id);
        memset(rt, 0, sizeof(*rt));
        return false;
    }
    return true;
}

static bool file_known(const struct route_ctx *s, const char *id, struct request *rq,
                       struct reply *r)
{
    bool found = false;
    struct ev_err err = {0};
    if (pipeline_file_exists(s->pipeline, id, &found, &err) < 0) {
        reply_internal(r, rq, err.msg);
        return false;
    }
    if (!found)
        reply_message(r, 400, "File with id: %.80s does not exist", id);
    return found;
}

/* Judge mode's part of check_job: false with the answer in r. */
static bool check_judge(const struct route_ctx *s, struct exec_job *j, struct request *rq,
                        struct reply *r)
{
    struct execute_body *b = &j->b;
    if (b->input_file && !file_known(s, b->input_file, rq, r))
        return false;
    if (!b->judge)
        return true;
    if (b->n_tests > s->cfg->max_tests) {
        reply_message(r, 400, "Too many tests: %zu (at most %u, MAX_TESTS)", b->n_tests,
                      s->cfg->max_tests);
        return false;
    }
    for (size_t i = 0; i < b->n_tests; i++) {
        const struct judge_test *t = &b->tests[i];
        if ((t->input.file_id && !file_known(s, t->input.file_id, rq, r)) ||
            (t->expected.file_id && !file_known(s, t->expected.file_id, rq, r)))
            return false;
    }
    j->judge = (struct judge_request){.tests = b->tests,
                                      .n_tests = b->n_tests,
                                      .checker = b->checker,
                                      .eps = b->eps,
                                      .stop_on_first_failure = b->stop_on_first_failure};
    const struct program_body *pb = b->has_interactor              ? &b->interactor
                                    : b->checker == CHECKER_CUSTOM ? &b->checker_program
                                                                   : NULL;
    if (pb) {
        if (!get_runtime(s, pb->runtime_id, &j->helper_rt, rq, r))
            return false;
        /* its runtime's own limits, the maxima for it */
        runtime_limits(&j->helper_rt, s->cfg, &j->helper.compile, &j->helper.run);
        j->helper.rt = &j->helper_rt;
        j->helper.source = pb->source;
        j->helper.source_len = pb->source_len;
        if (b->has_interactor)
            j->judge.interactor = &j->helper;
        else
            j->judge.custom = &j->helper;
    }
    j->req.judge = &j->judge;
    return true;
}

static int parse_body(const struct request *rq, int body_fd, struct execute_body *b,
                      struct ev_err *err)
{
    return body_fd >= 0 ? parse_execute_fd(body_fd, b, err)
                        : parse_execute(rq->body, rq->body_len, b, err);
}

/* base64 of a project, decoded; NULL with the answer in r. */
static void *decode_archive(const struct execute_body *b, const struct request *rq, struct reply *r,
                            size_t *len)
{
    size_t bad;
    void *archive = base64_decode(b->source, b->source_len, len, &bad);
    if (!archive) {
        if (bad == (size_t)-1)
            reply_internal(r, rq, "out of memory decoding base64");
        else
            reply_message(r, 400,
                          "Invalid base64 in source_code: unexpected character at offset %zu", bad);
    }
    return archive;
}

/* Reads and checks the request into j: false with the answer in r (j then holds nothing). */
static bool check_job(const struct route_ctx *s, struct exec_job *j, struct request *rq,
                      struct reply *r)
{
    struct ev_err err = {0};
    if (parse_body(rq, j->body_fd, &j->b, &err) < 0) {
        reply_message(r, 400, "%s", err.msg);
        return false;
    }
    /* The runtime is read once: its limits are checked and it runs from this one copy, so a
     * runtime deleted and installed again under the same id while the request waits is
     * never run under limits checked against the old one. An unknown runtime is answered
     * at once, without queueing. */
    if (!get_runtime(s, j->b.runtime_id, &j->rt, rq, r)) {
        execute_body_free(&j->b);
        return false;
    }
    j->req.rt = &j->rt;
    /* A runtime's own limits are, for it, the defaults and the maxima. */
    struct ev_limits cmax, rmax;
    runtime_limits(&j->rt, s->cfg, &cmax, &rmax);
    if (limits_resolve(&j->b.compile, &cmax, "compile", &j->req.compile, &err) < 0 ||
        limits_resolve(&j->b.run, &rmax, "run", &j->req.run, &err) < 0) {
        reply_message(r, 400, "%s", err.msg);
        execute_body_free(&j->b);
        runtime_free(&j->rt);
        return false;
    }
    if (!check_judge(s, j, rq, r)) {
        execute_body_free(&j->b);
        runtime_free(&j->rt);
        runtime_free(&j->helper_rt);
        memset(&j->helper_rt, 0, sizeof(j->helper_rt));
        return false;
    }
    return true;
}

static struct exec_job *prepare(const struct route_ctx *s, struct request *rq, bool is_project,
                                bool base64_output, struct reply *r)
{
    struct exec_job *j = calloc(1, sizeof(*j));
    if (!j) {
        reply_internal(r, rq, "out of memory");
        return NULL;
    }
    j->body_fd = rq->body_fd;
    j->base64_output = base64_output;
    j->req.is_project = is_project;
    /* A spilled body (over 1 MiB) is read when its turn comes, not now: held parsed while it
     * waits it would cost its size in memory, and parsed twice it would cost twice the time.
     * Its 400, if it has one, comes after the wait. */
    if (j->body_fd >= 0)
        return j;
    if (!check_job(s, j, rq, r)) {
        free(j);
        return NULL;
    }
    if (j->req.is_project) {
        /* checked now, so that a bad archive is answered without waiting; decoded again when
         * it runs rather than held decoded while it waits */
        size_t len;
        void *archive = decode_archive(&j->b, rq, r, &len);
        if (!archive) {
            exec_job_free(j);
            return NULL;
        }
        free(archive);
    }
    return j;
}

struct exec_job *execute_prepare(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    return prepare(s, rq, request_flag(rq, "is_project"), request_flag(rq, "base64_output"), r);
}

struct exec_job *execute_prepare_text(const struct route_ctx *s, struct request *rq,
                                      bool is_project, struct reply *r)
{
    rq->body_fd = -1;
    struct exec_job *j = prepare(s, rq, is_project, false, r);
    if (j && (j->b.judge || j->b.input || j->b.input_file)) {
        reply_message(r, 400, "%s",
                      j->b.judge ? "Judge mode (tests) is not available over WebSocket"
                                 : "Over WebSocket, stdin is sent as data messages, not as input "
                                   "or input_file");
        exec_job_free(j);
        return NULL;
    }
    return j;
}

int execute_job_request(const struct exec_job *j, struct exec_request *req, void **archive)
{
    *req = j->req;
    req->source = j->b.source;
    req->source_len = j->b.source_len;
    *archive = NULL;
    if (!req->is_project)
        return 0;
    size_t bad;
    *archive = base64_decode(j->b.source, j->b.source_len, &req->source_len, &bad);
    req->source = *archive;
    return *archive ? 0 : -1;
}

void execute_run(const struct route_ctx *s, struct exec_job *j, struct request *rq, struct reply *r)
{
    if (!j->b.root && !check_job(s, j, rq, r)) {
        pipeline_release(s->pipeline);
        return;
    }
    struct exec_request req = j->req;
    req.source = j->b.source;
    req.source_len = j->b.source_len;
    req.input = j->b.input;
    req.input_len = j->b.input_len;
    req.input_file = j->b.input_file;
    void *archive = NULL;
    if (req.is_project) {
        archive = decode_archive(&j->b, rq, r, &req.source_len);
        if (!archive) {
            pipeline_release(s->pipeline);
            return;
        }
        req.source = archive;
    }
    struct exec_outcome o;
    struct ev_err err = {0};
    enum pipe_status st =
        pipeline_execute_granted(s->pipeline, &req, request_aborted, rq, &o, &err);
    if (st == PIPE_OK) {
        r->status = 200;
        r->json = outcome_json(&o, &req, j->base64_output);
        exec_outcome_free(&o);
    } else if (st == PIPE_NO_RUNTIME) {
        reply_message(r, 400, "Runtime with id: %lld does not exist", (long long)j->rt.id);
    } else {
        reply_pipe_status(r, rq, st, &err);
    }
    free(archive);
}

void execute_whole(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    struct exec_job *j = execute_prepare(s, rq, r);
    if (!j)
        return;
    enum pipe_status st = pipeline_acquire(s->pipeline, request_aborted, rq);
    if (st == PIPE_OK)
        execute_run(s, j, rq, r);
    else
        reply_pipe_status(r, rq, st, NULL);
    exec_job_free(j);
}
