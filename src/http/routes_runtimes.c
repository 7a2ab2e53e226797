/* GET /runtimes, POST /runtimes, DELETE /runtimes/{id}, POST /update. */
#include <stdio.h>
#include <stdlib.h>

#include "http/request.h"
#include "http/server.h"

void route_runtimes_list(struct http_server *s, struct request *rq, struct reply *r)
{
    struct runtime_summary *list;
    size_t n;
    struct ev_err err = {0};
    /* A read of the store: never queued behind an installation. */
    if (store_list(s->pipeline->store, &list, &n, &err) < 0) {
        reply_internal(r, rq, err.msg);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *o = json_pack("{s:I,s:s}", "id", (json_int_t)list[i].id, "name", list[i].name);
        if (!o || json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    store_list_free(list, n);
    if (!arr) {
        reply_internal(r, rq, "out of memory listing runtimes");
        return;
    }
    r->status = 200;
    r->json = arr;
}

void route_runtimes_add(struct http_server *s, struct request *rq, struct reply *r)
{
    struct runtime rt;
    char msg[512];
    if (parse_runtime(rq->body, rq->body_len, nix_available(), &rt, msg, sizeof(msg)) < 0) {
        reply_message(r, 400, "%s", msg);
        return;
    }
    char *out = NULL, *errout = NULL;
    struct ev_err err = {0};
    enum pipe_status st =
        pipeline_install(s->pipeline, &rt, request_aborted, rq, &out, &errout, &err);
    switch (st) {
    case PIPE_OK:
    case PIPE_SETUP_FAILED:
        r->status = st == PIPE_OK ? 200 : 400;
        r->json = output_pair(out, errout);
        if (st == PIPE_OK)
            fprintf(stderr, "req %llu: runtime %lld \"%s\" added\n", (unsigned long long)rq->id,
                    (long long)rt.id, rt.name);
        break;
    case PIPE_NAME_TAKEN:
        reply_message(r, 400, "A runtime with this name already exists");
        break;
    default:
        reply_pipe_status(r, rq, st, &err);
    }
    free(out);
    free(errout);
    runtime_free(&rt);
}

void route_runtimes_delete(struct http_server *s, struct request *rq, const char *id_text,
                           struct reply *r)
{
    int64_t id = parse_id(id_text);
    if (id < 0) {
        reply_message(r, 400, "Invalid runtime id: '%.64s' (expected a positive integer)", id_text);
        return;
    }
    struct ev_err err = {0};
    enum pipe_status st = pipeline_delete(s->pipeline, id, request_aborted, rq, &err);
    if (st == PIPE_OK) {
        r->status = 200;
        r->json = json_pack("{s:s}", "message", "The runtime was deleted");
        fprintf(stderr, "req %llu: runtime %lld deleted\n", (unsigned long long)rq->id,
                (long long)id);
    } else if (st == PIPE_NO_RUNTIME) {
        reply_message(r, 404, "Could not find the specified runtime");
    } else {
        reply_pipe_status(r, rq, st, &err);
    }
}

void route_update(struct http_server *s, struct request *rq, struct reply *r)
{
    char *out = NULL, *errout = NULL;
    struct ev_err err = {0};
    enum pipe_status st = pipeline_update(s->pipeline, request_aborted, rq, &out, &errout, &err);
    if (st == PIPE_OK || st == PIPE_SETUP_FAILED) {
        r->status = st == PIPE_OK ? 200 : 500;
        r->json = output_pair(out, errout);
    } else {
        reply_pipe_status(r, rq, st, &err);
    }
    free(out);
    free(errout);
}
