/* What a route is given (struct request) and what it fills (struct reply), with the helpers
 * that build the common answers. The routes and the server both include this; neither includes
 * the other's header for it. */
#ifndef ENVICUTOR_REPLY_H
#define ENVICUTOR_REPLY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "pipeline/pipeline.h"

struct MHD_Connection;

struct request {
    uint64_t id;
    const char *rid; /* the request id, as logged and returned in X-Request-Id */
    const char *method, *path;
    const char *rest; /* for a prefix route, the path after the prefix; "" otherwise */
    const char *body; /* "" when the body is in body_fd */
    size_t body_len;
    int body_fd; /* /execute: a large body, in an unlinked file; POST /files: the upload (an
                  * unnamed file in the file store's directory); -1 otherwise */
    struct MHD_Connection *conn;
    int fd; /* the client's socket, watched for a disconnect */
    /* A request that came through the cluster's queue (cluster/worker.c) has no connection:
     * its query's flags are in flags ("is_project,base64_output"), and whether its client went
     * away is in *cancelled. NULL for a request of this server's own clients. */
    const char *flags;
    const atomic_bool *cancelled;
};

#define REPLY_MAX_HEADERS 6

struct reply {
    int status;
    json_t *json;             /* the body, or NULL with text */
    const char *text;         /* static text body */
    size_t text_len;          /* its length; 0: strlen(text) */
    char *owned_text;         /* or a malloc'ed one, freed once sent (GET /metrics) */
    const char *content_type; /* NULL: application/json, or text/plain for text */
    bool drop;                /* the client is gone: close without answering */
    unsigned retry_after;     /* seconds, for a Retry-After header; 0: none */
    /* A body sent from a file (application/octet-stream): the server owns file_fd from the
     * moment the handler returns, and closes it. */
    bool has_file;
    int file_fd;
    uint64_t file_size;
    /* Headers besides the usual ones (the playground's): static names, malloc'ed values that
     * the server frees once the answer is sent. */
    struct {
        const char *name;
        char *value;
    } headers[REPLY_MAX_HEADERS];
    size_t n_headers;
    /* A worker of the cluster whose runtime of this id is not the registry's: the job is
     * passed on to another worker (cluster/worker.c) rather than answered. 0: none. */
    int64_t elsewhere;
};

/* Whether the client of rq has gone away (the pipeline's abort hook). */
bool request_aborted(void *rq);

/* Whether the query string sets name to "true" (in any case), as in ?is_project=true. */
bool request_flag(const struct request *rq, const char *name);
/* The query's flags that /execute reads (is_project, base64_output) as a job of the cluster
 * carries them to its worker, the form rq->flags has there: "is_project,base64_output,". */
void request_flags_text(const struct request *rq, char *out, size_t size);

void reply_message(struct reply *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 500 "Internal server error", with the cause in the log. */
void reply_internal(struct reply *r, const struct request *rq, const char *cause);
/* The common answers to a pipeline status other than PIPE_OK. */
void reply_pipe_status(struct reply *r, const struct request *rq, enum pipe_status st,
                       const struct ev_err *err);
/* {"stdout": ..., "stderr": ...} */
json_t *output_pair(const char *out, const char *errout);

#endif
