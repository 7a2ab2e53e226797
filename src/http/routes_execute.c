/* POST /execute[?is_project=true] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "format/stage_json.h"
#include "http/request.h"
#include "http/reply.h"
#include "http/routes.h"
#include "pipeline/runtime_info.h"

static json_t *outcome_json(const struct exec_outcome *o, bool base64_output)
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
};

void exec_job_free(struct exec_job *j)
{
    if (!j)
        return;
    execute_body_free(&j->b);
    runtime_free(&j->rt);
    free(j);
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
    struct ev_err gerr = {0};
    bool found = false;
    int got = store_get(s->pipeline->store, j->b.runtime_id, &j->rt, &found, &gerr);
    if (got < 0 || !found) {
        if (got < 0)
            reply_internal(r, rq, gerr.msg);
        else
            reply_message(r, 400, "Runtime with id: %lld does not exist",
                          (long long)j->b.runtime_id);
        execute_body_free(&j->b);
        memset(&j->rt, 0, sizeof(j->rt));
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
    return true;
}

struct exec_job *execute_prepare(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    struct exec_job *j = calloc(1, sizeof(*j));
    if (!j) {
        reply_internal(r, rq, "out of memory");
        return NULL;
    }
    j->body_fd = rq->body_fd;
    j->base64_output = request_flag(rq, "base64_output");
    j->req.is_project = request_flag(rq, "is_project");
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
        r->json = outcome_json(&o, j->base64_output);
        exec_outcome_free(&o);
    } else if (st == PIPE_NO_RUNTIME) {
        reply_message(r, 400, "Runtime with id: %lld does not exist", (long long)j->rt.id);
    } else {
        reply_pipe_status(r, rq, st, &err);
    }
    free(archive);
}
