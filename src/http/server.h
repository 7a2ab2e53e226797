/* The HTTP server (libmicrohttpd, one thread per connection). It only translates: a request
 * becomes a call into the pipeline, the outcome becomes a status and a JSON body. */
#ifndef ENVICUTOR_SERVER_H
#define ENVICUTOR_SERVER_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "http/auth.h"
#include "pipeline/pipeline.h"

struct http_server {
    struct MHD_Daemon *daemon;
    struct pipeline *pipeline;
    const struct ev_config *cfg;
    const struct auth_keys *auth; /* set before http_start; NULL or empty: no API keys */
    atomic_uint_fast64_t next_id;
};

int http_start(struct http_server *s, int listen_fd, struct pipeline *p,
               const struct ev_config *cfg, struct ev_err *err);
/* Stops accepting connections (the pipeline is stopped by the caller) and waits for the
 * connections' threads. */
void http_stop(struct http_server *s);

/* ---- for the routes ---------------------------------------------------------------------- */

struct request {
    uint64_t id;
    const char *method, *path;
    const char *body; /* "" when the body is in body_fd */
    size_t body_len;
    int body_fd; /* /execute: a large body, in an unlinked file; -1 otherwise */
    struct MHD_Connection *conn;
    int fd; /* the client's socket, watched for a disconnect */
};

struct reply {
    int status;
    json_t *json;         /* the body, or NULL with text */
    const char *text;     /* static text body */
    bool drop;            /* the client is gone: close without answering */
    unsigned retry_after; /* seconds, for a Retry-After header; 0: none */
};

/* Whether the client of rq has gone away (the pipeline's abort hook). */
bool request_aborted(void *rq);

void reply_message(struct reply *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 500 "Internal server error", with the cause in the log. */
void reply_internal(struct reply *r, const struct request *rq, const char *cause);
/* The common answers to a pipeline status other than PIPE_OK. */
void reply_pipe_status(struct reply *r, const struct request *rq, enum pipe_status st,
                       const struct ev_err *err);
/* {"stdout": ..., "stderr": ...} */
json_t *output_pair(const char *out, const char *errout);

void route_runtimes_list(struct http_server *s, struct request *rq, struct reply *r);
void route_runtimes_add(struct http_server *s, struct request *rq, struct reply *r);
void route_runtimes_get(struct http_server *s, struct request *rq, const char *id, struct reply *r);
void route_runtimes_delete(struct http_server *s, struct request *rq, const char *id,
                           struct reply *r);
void route_update(struct http_server *s, struct request *rq, struct reply *r);
void route_gc(struct http_server *s, struct request *rq, struct reply *r);
void route_execute(struct http_server *s, struct request *rq, bool is_project, bool base64_output,
                   struct reply *r);

#endif
