#include "http/routes.h"

#include <string.h>

#include "cluster/api.h"

static void route_health(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    (void)rq;
    if (ctx->cluster) {
        /* an API node: the live workers (their heartbeats) and their free slots */
        struct ev_err err;
        r->json = cluster_health(ctx->cluster, &err);
        if (r->json)
            r->status = 200;
        else
            reply_message(r, 503, "%s", err.msg);
        return;
    }
    r->status = 200;
    r->text = "Up and running";
}

/* Reading runtimes and executing need an execute key (an admin key may do everything); what
 * changes the server's state needs an admin key. Test files belong to those who execute. */
static const struct route routes[] = {
    {"GET", "/health", ROUTE_EXACT, AUTH_NONE, BODY_MEMORY, RUN_INLINE, route_health},
    {"GET", "/runtimes", ROUTE_EXACT, AUTH_EXECUTE, BODY_MEMORY, RUN_INLINE, route_runtimes_list},
    {"POST", "/runtimes", ROUTE_EXACT, AUTH_ADMIN, BODY_MEMORY, RUN_THREAD, route_runtimes_add},
    {"GET", "/runtimes/", ROUTE_EXACT, AUTH_EXECUTE, BODY_MEMORY, RUN_INLINE, route_runtimes_list},
    {"POST", "/runtimes/", ROUTE_EXACT, AUTH_ADMIN, BODY_MEMORY, RUN_THREAD, route_runtimes_add},
    {"GET", "/runtimes/", ROUTE_PREFIX, AUTH_EXECUTE, BODY_MEMORY, RUN_INLINE, route_runtimes_get},
    {"DELETE", "/runtimes/", ROUTE_PREFIX, AUTH_ADMIN, BODY_MEMORY, RUN_THREAD,
     route_runtimes_delete},
    {"POST", "/update", ROUTE_EXACT, AUTH_ADMIN, BODY_MEMORY, RUN_THREAD, route_update},
    {"POST", "/gc", ROUTE_EXACT, AUTH_ADMIN, BODY_MEMORY, RUN_THREAD, route_gc},
    {"POST", "/execute", ROUTE_EXACT, AUTH_EXECUTE, BODY_FILE, RUN_QUEUED, NULL},
    {"GET", "/execute/ws", ROUTE_EXACT, AUTH_EXECUTE, BODY_MEMORY, RUN_UPGRADE, NULL},
    {"POST", "/files", ROUTE_EXACT, AUTH_EXECUTE, BODY_STORE, RUN_THREAD, route_files_post},
    {"GET", "/files/", ROUTE_PREFIX, AUTH_EXECUTE, BODY_MEMORY, RUN_INLINE, route_files_get},
    {"DELETE", "/files/", ROUTE_PREFIX, AUTH_EXECUTE, BODY_MEMORY, RUN_INLINE, route_files_delete},
    {"POST", "/submissions", ROUTE_EXACT, AUTH_EXECUTE, BODY_FILE, RUN_INLINE,
     route_submissions_post},
    {"GET", "/submissions/", ROUTE_PREFIX, AUTH_EXECUTE, BODY_MEMORY, RUN_INLINE,
     route_submissions_get},
    {"GET", "/metrics", ROUTE_EXACT, AUTH_ADMIN, BODY_MEMORY, RUN_INLINE, route_metrics},
    /* The playground: open, since it holds no secret; the API calls it makes need a key. */
    {"GET", "/", ROUTE_EXACT, AUTH_NONE, BODY_MEMORY, RUN_INLINE, route_static_index},
    {"HEAD", "/", ROUTE_EXACT, AUTH_NONE, BODY_MEMORY, RUN_INLINE, route_static_index},
    {"GET", "/static/", ROUTE_PREFIX, AUTH_NONE, BODY_MEMORY, RUN_INLINE, route_static},
    {"HEAD", "/static/", ROUTE_PREFIX, AUTH_NONE, BODY_MEMORY, RUN_INLINE, route_static},
};

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static bool path_matches(const struct route *rt, const char *path)
{
    return rt->match == ROUTE_PREFIX ? strncmp(path, rt->path, strlen(rt->path)) == 0
                                     : strcmp(path, rt->path) == 0;
}

const struct route *route_find(const char *method, const char *path, bool *path_known)
{
    const struct route *first = NULL;
    for (size_t i = 0; i < N_ROUTES && !first; i++)
        if (path_matches(&routes[i], path))
            first = &routes[i];
    *path_known = first != NULL;
    if (!first)
        return NULL;
    for (size_t i = 0; i < N_ROUTES; i++)
        if (routes[i].match == first->match && strcmp(routes[i].path, first->path) == 0 &&
            strcmp(routes[i].method, method) == 0)
            return &routes[i];
    return NULL;
}

enum auth_role route_role(const char *method, const char *path)
{
    bool known;
    const struct route *rt = route_find(strcmp(method, "HEAD") == 0 ? "GET" : method, path, &known);
    return rt ? rt->role : AUTH_ADMIN;
}

size_t route_count(void)
{
    return N_ROUTES;
}

const struct route *route_at(size_t i)
{
    return i < N_ROUTES ? &routes[i] : NULL;
}

size_t route_index(const struct route *rt)
{
    return rt ? (size_t)(rt - routes) : N_ROUTES;
}
