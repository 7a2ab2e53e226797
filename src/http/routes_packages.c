/* Package management: POST /update (Nix's channels) and POST /gc (garbage collection of
 * runtime directories and of Nix's store). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "http/reply.h"
#include "http/routes.h"

static json_t *text(const char *s)
{
    size_t n;
    char *clean = utf8_sanitize(s ? s : "", s ? strlen(s) : 0, &n);
    json_t *j = clean ? json_stringn(clean, n) : NULL;
    free(clean);
    return j;
}

void route_update(const struct route_ctx *s, struct request *rq, struct reply *r)
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

void route_gc(const struct route_ctx *s, struct request *rq, struct reply *r)
{
    struct gc_outcome g;
    struct ev_err err = {0};
    enum pipe_status st = pipeline_gc(s->pipeline, request_aborted, rq, &g, &err);
    if (st != PIPE_OK) {
        reply_pipe_status(r, rq, st, &err);
        return;
    }
    json_t *paths = json_array();
    for (size_t i = 0; paths && i < g.n_paths; i++)
        if (json_array_append_new(paths, text(g.paths[i])) < 0) {
            json_decref(paths);
            paths = NULL;
        }
    json_t *o = paths ? json_pack("{s:I,s:b,s:o,s:o*,s:o*}", "runtime_directories_removed",
                                  (json_int_t)g.dirs_removed, "nix", g.nix, "store_paths_deleted",
                                  paths, "stdout", g.nix ? text(g.out) : json_string(""), "stderr",
                                  g.nix ? text(g.err) : json_string(""))
                      : NULL;
    if (o) {
        r->status = g.ok ? 200 : 500;
        r->json = o;
        fprintf(stderr, "req %s: gc: %zu runtime directories and %zu store paths removed\n",
                rq->rid, g.dirs_removed, g.n_paths);
    } else {
        reply_internal(r, rq, "out of memory answering /gc");
    }
    gc_outcome_free(&g);
}
