/* /runtimes on an API node of a cluster: the registry in Redis (cluster/registry.h) instead of
 * the node's own store, and each change carried out by every live worker before the answer. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/api.h"
#include "cluster/registry.h"
#include "common/logsafe.h"
#include "http/reply.h"
#include "http/request.h"
#include "http/routes.h"
#include "pipeline/runtime_info.h"

/* How long an API node waits for the workers' answers to a change: an installation may first
 * wait for the worker's running jobs (the exclusive turn), then take INSTALLATION_TIMEOUT. */
static unsigned wait_seconds(const struct ev_config *cfg)
{
    return (unsigned)cfg->installation_timeout + 60;
}

static void registry_down(struct reply *r, const struct ev_err *err)
{
    reply_message(r, 503, "%s", err->msg);
}

void cluster_runtimes_list(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    (void)rq;
    struct ev_err err = {0};
    json_t *arr = registry_list(cluster_registry(s->cluster), &err);
    if (!arr) {
        registry_down(r, &err);
        return;
    }
    r->status = 200;
    r->json = arr;
}

static int count_status(json_t *workers, const char *status)
{
    int n = 0;
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w)
    {
        n += strcmp(json_string_value(json_object_get(w, "status")), status) == 0;
    }
    return n;
}

void cluster_runtimes_add(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    struct runtime rt;
    struct ev_err err = {0};
    /* Nix is the workers' business: each reports whether it could install the runtime */
    if (runtime_from_body(s, rq, true, &rt, r) < 0)
        return;
    struct registry *g = cluster_registry(s->cluster);
    /* listed before the change: a worker that comes up later installs the runtime at its
     * start, before it takes jobs, and is not waited for */
    json_t *live = registry_live_workers(g, &err);
    int64_t id = 0;
    long long version = 0;
    enum registry_conflict c = REGISTRY_OK;
    if (!live ||
        registry_add(g, rt.name, rq->body, rq->body_len, rt.id, &id, &version, &c, &err) < 0) {
        registry_down(r, &err);
        goto out;
    }
    if (c != REGISTRY_OK) {
        if (c == REGISTRY_NAME_TAKEN)
            reply_message(r, 400, "A runtime with this name already exists");
        else
            reply_message(r, 400, "A runtime with id %lld already exists", (long long)rt.id);
        goto out;
    }
    char name[300];
    fprintf(stderr, "req %s: runtime %" PRId64 " \"%s\" added to the registry (version %lld)\n",
            rq->rid, id, log_safe(rt.name, name, sizeof(name)), version);
    json_t *answers = registry_wait(g, version, live, wait_seconds(s->cfg), &err);
    if (!answers) {
        reply_internal(r, rq, err.msg);
        goto out;
    }
    int installed = count_status(answers, "installed");
    int failed = count_status(answers, "failed");
    if (installed == 0 && failed > 0) {
        /* failed wherever it was tried, as a set-up failing on one node: not kept */
        bool found;
        long long v2;
        if (registry_delete(g, id, &found, &v2, &err) < 0)
            fprintf(stderr, "req %s: runtime %" PRId64 ": %s\n", rq->rid, id, err.msg);
        r->status = 400;
        r->json = json_pack("{s:s,s:o}", "message",
                            "The runtime could not be installed on any worker; it was not kept",
                            "workers", answers);
        goto out;
    }
    char hash[72] = "";
    char *def = NULL;
    size_t def_len;
    if (registry_get(g, id, &def, &def_len, hash, &err) < 0)
        hash[0] = '\0';
    free(def);
    r->status = 200;
    r->json = json_pack("{s:I,s:s,s:o,s:o}", "id", (json_int_t)id, "name", rt.name, "hash",
                        hash[0] ? json_string(hash) : json_null(), "workers", answers);
out:
    json_decref(live);
    runtime_free(&rt);
}

/* A definition of the registry as a struct runtime (its checks are those of POST /runtimes). */
static int parse_def(const struct route_ctx *s, int64_t id, const char *def, size_t len,
                     struct runtime *rt, struct ev_err *err)
{
    if (parse_runtime(def, len, true, rt, err) < 0)
        return -1;
    if (parse_runtime_options(def, len, &s->cfg->compile, &s->cfg->run, rt, err) < 0) {
        runtime_free(rt);
        return -1;
    }
    rt->id = id;
    return 0;
}

void cluster_runtimes_get(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    int64_t id = parse_id(rq->rest);
    if (id < 0) {
        reply_message(r, 400, "Invalid runtime id: '%.64s' (expected a positive integer)",
                      rq->rest);
        return;
    }
    struct registry *g = cluster_registry(s->cluster);
    struct ev_err err = {0};
    char *def = NULL, hash[72];
    size_t len = 0;
    if (registry_get(g, id, &def, &len, hash, &err) < 0) {
        registry_down(r, &err);
        return;
    }
    if (!def) {
        reply_message(r, 404, "Could not find the specified runtime");
        return;
    }
    struct runtime rt;
    int parsed = parse_def(s, id, def, len, &rt, &err);
    free(def);
    if (parsed < 0) {
        reply_internal(r, rq, err.msg);
        return;
    }
    json_t *j = runtime_describe(&rt, s->cfg, hash);
    runtime_free(&rt);
    json_t *workers = j ? registry_worker_hashes(g, id, &err) : NULL;
    if (!j || !workers) {
        json_decref(j);
        registry_down(r, &err);
        return;
    }
    json_object_set_new(j, "workers", workers);
    r->status = 200;
    r->json = j;
}

void cluster_runtimes_delete(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    int64_t id = parse_id(rq->rest);
    if (id < 0) {
        reply_message(r, 400, "Invalid runtime id: '%.64s' (expected a positive integer)",
                      rq->rest);
        return;
    }
    struct registry *g = cluster_registry(s->cluster);
    struct ev_err err = {0};
    json_t *live = registry_live_workers(g, &err);
    bool found = false;
    long long version = 0;
    if (!live || registry_delete(g, id, &found, &version, &err) < 0) {
        json_decref(live);
        registry_down(r, &err);
        return;
    }
    if (!found) {
        json_decref(live);
        reply_message(r, 404, "Could not find the specified runtime");
        return;
    }
    fprintf(stderr, "req %s: runtime %" PRId64 " deleted from the registry (version %lld)\n",
            rq->rid, id, version);
    json_t *answers = registry_wait(g, version, live, wait_seconds(s->cfg), &err);
    json_decref(live);
    if (!answers) {
        reply_internal(r, rq, err.msg);
        return;
    }
    r->status = 200;
    r->json = json_pack("{s:s,s:o}", "message", "The runtime was deleted", "workers", answers);
}

bool cluster_runtime(const struct route_ctx *s, int64_t id, struct runtime *rt, bool *local,
                     struct request *rq, struct reply *r)
{
    struct ev_err err = {0};
    if (s->cluster) {
        /* an API node: the registry's definition, checked as the worker will check it */
        char *def = NULL, hash[72];
        size_t len = 0;
        *local = false;
        if (registry_get(cluster_registry(s->cluster), id, &def, &len, hash, &err) < 0) {
            registry_down(r, &err);
            return false;
        }
        if (!def) {
            reply_message(r, 400, "Runtime with id: %lld does not exist", (long long)id);
            return false;
        }
        int parsed = parse_def(s, id, def, len, rt, &err);
        free(def);
        if (parsed < 0)
            reply_internal(r, rq, err.msg);
        return parsed == 0;
    }
    *local = true;
    switch (registry_check(s->registry, s->pipeline, id, &err)) {
    case REGISTRY_RUNS_HERE:
        return true;
    case REGISTRY_UNKNOWN:
        reply_message(r, 400, "Runtime with id: %lld does not exist", (long long)id);
        return false;
    case REGISTRY_ELSEWHERE:
        reply_message(r, 503,
                      "No live worker has runtime %lld as the registry defines it (its "
                      "installation failed or differs on every worker that is up)",
                      (long long)id);
        r->elsewhere = id;
        return false;
    default:
        registry_down(r, &err);
        return false;
    }
}
