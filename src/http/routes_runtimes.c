/* GET /runtimes, POST /runtimes, GET /runtimes/{id}, DELETE /runtimes/{id}. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/logsafe.h"
#include "http/reply.h"
#include "http/request.h"
#include "http/routes.h"
#include "pipeline/runtime_info.h"

void route_runtimes_list(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    if (s->cluster) {
        cluster_runtimes_list(s, rq, r);
        return;
    }
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

int runtime_from_body(const struct route_ctx *s, struct request *rq, bool nix_ok,
                      struct runtime *rt, struct reply *r)
{
    struct ev_err err = {0};
    if (parse_runtime(rq->body, rq->body_len, nix_ok, rt, &err) < 0) {
        reply_message(r, 400, "%s", err.msg);
        return -1;
    }
    if (parse_runtime_options(rq->body, rq->body_len, &s->cfg->compile, &s->cfg->run, rt, &err) <
        0) {
        reply_message(r, 400, "%s", err.msg);
        runtime_free(rt);
        return -1;
    }
    return 0;
}

void route_runtimes_add(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    if (s->cluster) {
        cluster_runtimes_add(s, rq, r);
        return;
    }
    struct runtime rt;
    struct ev_err err = {0};
    if (runtime_from_body(s, rq, nix_available(), &rt, r) < 0)
        return;
    int64_t wanted_id = rt.id;
    char *out = NULL, *errout = NULL;
    enum pipe_status st =
        pipeline_install(s->pipeline, &rt, request_aborted, rq, &out, &errout, &err);
    switch (st) {
    case PIPE_OK:
    case PIPE_SETUP_FAILED:
        r->status = st == PIPE_OK ? 200 : 400;
        r->json = output_pair(out, errout);
        if (st == PIPE_OK) {
            char name[300];
            fprintf(stderr, "req %s: runtime %lld \"%s\" added\n", rq->rid, (long long)rt.id,
                    log_safe(rt.name, name, sizeof(name)));
        }
        break;
    case PIPE_NAME_TAKEN:
        reply_message(r, 400, "A runtime with this name already exists");
        break;
    case PIPE_ID_TAKEN:
        reply_message(r, 400, "A runtime with id %lld already exists", (long long)wanted_id);
        break;
    default:
        reply_pipe_status(r, rq, st, &err);
    }
    free(out);
    free(errout);
    runtime_free(&rt);
}

json_t *runtime_describe(const struct runtime *rt, const struct ev_config *cfg, const char *hash)
{
    struct ev_limits cl, rl;
    runtime_limits(rt, cfg, &cl, &rl);
    char created[32] = "";
    if (rt->created_at > 0) {
        time_t t = (time_t)rt->created_at;
        struct tm tm;
        if (gmtime_r(&t, &tm))
            strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    return json_pack(
        "{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:o?,s:o?,s:o?,s:o?,s:o?,s:o,s:o}", "id", (json_int_t)rt->id,
        "name", rt->name, "provider", rt->provider, "nix_shell", rt->nix_shell, "compile_script",
        rt->compile_script, "run_script", rt->run_script, "source_file_name", rt->source_file_name,
        "env", env_json(rt->env, rt->env_len), "compile_limits", limits_json(&cl), "run_limits",
        limits_json(&rl), "runtime_compile_limits", override_json(&rt->compile_limits),
        "runtime_run_limits", override_json(&rt->run_limits), "created_at",
        created[0] ? json_string(created) : json_null(), "hash",
        hash && hash[0] ? json_string(hash) : json_null());
}

void route_runtimes_get(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    if (s->cluster) {
        cluster_runtimes_get(s, rq, r);
        return;
    }
    const char *id_text = rq->rest;
    int64_t id = parse_id(id_text);
    if (id < 0) {
        reply_message(r, 400, "Invalid runtime id: '%.64s' (expected a positive integer)", id_text);
        return;
    }
    struct runtime rt;
    struct ev_err err = {0};
    /* A read of the store, like the list: never queued. */
    bool found;
    if (store_get(s->pipeline->store, id, &rt, &found, &err) < 0) {
        reply_internal(r, rq, err.msg);
        return;
    }
    if (!found) {
        reply_message(r, 404, "Could not find the specified runtime");
        return;
    }
    char hash[72];
    json_t *j = NULL;
    if (runtime_hash(&rt, s->cfg, hash) == 0)
        j = runtime_describe(&rt, s->cfg, hash);
    runtime_free(&rt);
    if (!j) {
        reply_internal(r, rq, "out of memory describing a runtime");
        return;
    }
    r->status = 200;
    r->json = j;
}

void route_runtimes_delete(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    if (s->cluster) {
        cluster_runtimes_delete(s, rq, r);
        return;
    }
    const char *id_text = rq->rest;
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
        fprintf(stderr, "req %s: runtime %lld deleted\n", rq->rid, (long long)id);
    } else if (st == PIPE_NO_RUNTIME) {
        reply_message(r, 404, "Could not find the specified runtime");
    } else {
        reply_pipe_status(r, rq, st, &err);
    }
}
