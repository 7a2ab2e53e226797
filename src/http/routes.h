/* The API's routes: one table (routes.c) that says, for each method and path, which handler
 * answers and which API key role it needs. The server dispatches through route_find and asks
 * route_role before it reads a body; a new route is one line of the table and its handler. */
#ifndef ENVICUTOR_ROUTES_H
#define ENVICUTOR_ROUTES_H

#include <stdbool.h>

#include "http/auth.h"
#include "http/reply.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"

/* What a handler may use besides its request. */
struct submissions;

struct route_ctx {
    struct pipeline *pipeline;
    const struct ev_config *cfg;
    struct submissions *subs;    /* asynchronous submissions; NULL when the server has none */
    struct cluster_api *cluster; /* an API node's queue (REDIS_URL), or NULL */
    struct registry *registry;   /* a worker's runtime registry (cluster/registry.h), or NULL */
};

struct cluster_api;
typedef void route_fn(const struct route_ctx *ctx, struct request *rq, struct reply *r);

/* ROUTE_PREFIX: the handler finds the rest of the path in rq->rest. */
enum route_match { ROUTE_EXACT, ROUTE_PREFIX };

/* BODY_FILE: the handler parses a large body from rq->body_fd (see SPILL_BYTES in server.c).
 * BODY_MEMORY: a body that was spilled to a file is read back into rq->body first.
 * BODY_STORE: an upload to the file store: bounded by MAX_FILE_SIZE_UPLOAD instead of
 * MAX_REQUEST_SIZE, and written from its first byte to an unnamed file in the store's
 * directory (rq->body_fd; -1 only for an empty body), which the store links in. */
enum route_body { BODY_MEMORY, BODY_FILE, BODY_STORE };

/* Where a handler runs. RUN_INLINE: in libmicrohttpd's thread (quick: a health check, a read
 * of the database). RUN_THREAD: in a thread of its own while the connection is suspended
 * (work that may wait for its turn and take minutes: installations, updates). RUN_QUEUED:
 * /execute, which waits in the scheduler's queue as a suspended connection and a small job,
 * and runs in one of the server's workers when its turn comes (fn is NULL). */
enum route_run { RUN_INLINE, RUN_THREAD, RUN_QUEUED, RUN_UPGRADE /* a WebSocket: ws.c */ };

struct route {
    const char *method;
    const char *path;
    enum route_match match;
    enum auth_role role;
    enum route_body body;
    enum route_run run;
    route_fn *fn;
};

/* The route of method on path, or NULL: then *path_known says whether the path has routes for
 * other methods (405) or none (404). The first entry of the table whose path matches decides
 * which entries the method is looked for in, so "/runtimes/" is the list, never an id. */
const struct route *route_find(const char *method, const char *path, bool *path_known);

/* The role a request needs: the route's, HEAD counting as GET; AUTH_ADMIN for anything
 * without a route, so a route added without a role is never open. */
enum auth_role route_role(const char *method, const char *path);

/* The table's entries by index (0 .. route_count() - 1), and the index of an entry; NULL's is
 * route_count(). For counters kept per route. */
size_t route_count(void);
const struct route *route_at(size_t i);
size_t route_index(const struct route *rt);

/* routes_metrics.c: GET /metrics, and the count of answered requests by route and status that
 * the server keeps (status 0: the client went away before its answer). */
route_fn route_metrics;
void metrics_request(const char *method, const char *path, int status);

/* routes_runtimes.c */
route_fn route_runtimes_list, route_runtimes_add, route_runtimes_get, route_runtimes_delete;
/* GET /runtimes/{id}'s description of rt with its hash. */
json_t *runtime_describe(const struct runtime *rt, const struct ev_config *cfg, const char *hash);
/* routes_runtimes_cluster.c: the same routes on an API node, on the registry in Redis. */
route_fn cluster_runtimes_list, cluster_runtimes_add, cluster_runtimes_get, cluster_runtimes_delete;
/* The runtime id that a job names, in a cluster: on an API node read from the registry; on a
 * worker checked against it (false with the answer in r, r->elsewhere set when another worker
 * should run it), then read from the worker's store by the caller. */
bool cluster_runtime(const struct route_ctx *s, int64_t id, struct runtime *rt, bool *local,
                     struct request *rq, struct reply *r);
/* routes_runtimes.c: a POST /runtimes body checked into *rt (nix_ok: Nix runtimes accepted);
 * -1 with the 400 in r. */
struct runtime;
int runtime_from_body(const struct route_ctx *s, struct request *rq, bool nix_ok,
                      struct runtime *rt, struct reply *r);
/* routes_files.c */
route_fn route_files_post, route_files_get, route_files_delete;
/* routes_submissions.c: asynchronous submissions (http/submissions.h) */
route_fn route_submissions_post, route_submissions_get;
/* routes_static.c: the playground's page and files (HEAD too: libmicrohttpd sends no body) */
route_fn route_static_index, route_static;
/* routes_packages.c */
route_fn route_update, route_gc;
/* routes_execute.c: POST /execute in two steps, so that a request waits for its turn without
 * a thread (server.c). execute_prepare reads and checks the request: NULL with the answer in r
 * (a 400 at once, never queued), or the job to queue. execute_run, once the job has its turn
 * (a granted submission ticket), runs it and gives the turn back. */
struct exec_job;
struct exec_job *execute_prepare(const struct route_ctx *ctx, struct request *rq, struct reply *r);
void execute_run(const struct route_ctx *ctx, struct exec_job *j, struct request *rq,
                 struct reply *r);
void exec_job_free(struct exec_job *j);
/* Both steps in the calling thread, which waits for the turn: a request that came through the
 * cluster's queue, run by a worker (cluster/worker.c). */
void execute_whole(const struct route_ctx *ctx, struct request *rq, struct reply *r);

/* /execute/ws (ws.c): the init message's JSON, an /execute body, checked as /execute checks
 * its own (the same messages); NULL with the answer in r. execute_job_request then gives the
 * request to run: *archive (a decoded project, or NULL) is the caller's to free. */
struct exec_job *execute_prepare_text(const struct route_ctx *s, struct request *rq,
                                      bool is_project, struct reply *r);
int execute_job_request(const struct exec_job *j, struct exec_request *req, void **archive);

#endif
