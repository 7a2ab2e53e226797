/* POST /execute[?is_project=true] */
#include <stdio.h>
#include <stdlib.h>

#include "common/base64.h"
#include "format/stage_json.h"
#include "http/request.h"
#include "http/server.h"
#include "pipeline/runtime_info.h"

static json_t *outcome_json(const struct exec_outcome *o, bool base64_output)
{
    static const char *const names[STAGE_COUNT] = {"extract", "compile", "run"};
    json_t *j = json_object();
    for (int i = 0; j && i < STAGE_COUNT; i++) {
        json_t *v = o->ran[i] ? stage_result_json(&o->res[i], base64_output) : json_null();
        if (!v || json_object_set_new(j, names[i], v) < 0) {
            json_decref(j);
            j = NULL;
        }
    }
    return j;
}

void route_execute(struct http_server *s, struct request *rq, bool is_project, bool base64_output,
                   struct reply *r)
{
    struct execute_body b;
    struct ev_err err = {0};
    if ((rq->body_fd >= 0 ? parse_execute_fd(rq->body_fd, &b, &err)
                          : parse_execute(rq->body, rq->body_len, &b, &err)) < 0) {
        reply_message(r, 400, "%s", err.msg);
        return;
    }
    void *archive = NULL;
    /* The runtime is read once: its limits are checked and it runs from this one copy, so a
     * runtime deleted and installed again under the same id while the request waits is
     * never run under limits checked against the old one. An unknown runtime is answered
     * at once, without queueing. */
    struct runtime rt;
    struct ev_err gerr = {0};
    bool found = false;
    int got = store_get(s->pipeline->store, b.runtime_id, &rt, &found, &gerr);
    if (got < 0 || !found) {
        if (got < 0)
            reply_internal(r, rq, gerr.msg);
        else
            reply_message(r, 400, "Runtime with id: %lld does not exist", (long long)b.runtime_id);
        execute_body_free(&b);
        return;
    }
    struct exec_request req = {
        .rt = &rt,
        .source = b.source,
        .source_len = b.source_len,
        .is_project = is_project,
        .input = b.input,
        .input_len = b.input_len,
    };
    /* A runtime's own limits are, for it, the defaults and the maxima. */
    struct ev_limits cmax, rmax;
    runtime_limits(&rt, s->cfg, &cmax, &rmax);
    if (limits_resolve(&b.compile, &cmax, "compile", &req.compile, &err) < 0 ||
        limits_resolve(&b.run, &rmax, "run", &req.run, &err) < 0) {
        reply_message(r, 400, "%s", err.msg);
        goto out;
    }
    if (is_project) {
        size_t len, bad;
        archive = base64_decode(b.source, b.source_len, &len, &bad);
        if (!archive) {
            if (bad == (size_t)-1)
                reply_internal(r, rq, "out of memory decoding base64");
            else
                reply_message(r, 400,
                              "Invalid base64 in source_code: unexpected character at offset %zu",
                              bad);
            goto out;
        }
        req.source = archive;
        req.source_len = len;
    }
    struct exec_outcome o;
    enum pipe_status st = pipeline_execute(s->pipeline, &req, request_aborted, rq, &o, &err);
    if (st == PIPE_OK) {
        r->status = 200;
        r->json = outcome_json(&o, base64_output);
        exec_outcome_free(&o);
    } else if (st == PIPE_NO_RUNTIME) {
        reply_message(r, 400, "Runtime with id: %lld does not exist", (long long)b.runtime_id);
    } else {
        reply_pipe_status(r, rq, st, &err);
    }
out:
    free(archive);
    runtime_free(&rt);
    execute_body_free(&b);
}
