/* The HTTP server. It only translates: a request becomes a call into the pipeline, the outcome
 * becomes a status and a JSON body.
 *
 * libmicrohttpd runs in its epoll mode with a small pool of threads, so that a connection costs
 * its socket and a little memory, not a thread, and their number is bounded by the descriptor
 * limit (raised to its hard limit at start), not by select()'s 1 024. Nothing slow runs in
 * those threads: a submission is checked there, then its connection is suspended while it
 * waits in the scheduler's queue (a job, no thread) and runs in one of MAX_CONCURRENT_SUBMISSIONS
 * workers when its turn comes; installations and other long work run in a thread of their
 * own. A watcher sees a waiting client go away (its socket's hang-up, through an epoll set of
 * its own) and takes its job out of the queue. */
#ifndef ENVICUTOR_SERVER_H
#define ENVICUTOR_SERVER_H

#include <pthread.h>
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
    struct submissions *subs;     /* set before http_start; NULL: no async submissions */
    atomic_uint_fast64_t next_id;
    uint32_t rid_prefix; /* of the request ids the server makes (common/request_id.h) */
    atomic_uint active;  /* requests begun and not yet completed (sent, or dropped) */
    unsigned max_connections;

    /* Granted (or refused, when the server stops) jobs, for the workers. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct conn_state *ready_head, *ready_tail;
    unsigned threads; /* handlers running in threads of their own */
    bool closing;
    pthread_t *workers;
    unsigned n_workers;
    int watch_fd; /* epoll set of the waiting connections' sockets */
    int wake_fd;  /* eventfd that stops the watcher */
    pthread_t watcher;
    bool watcher_started;
    struct ws_hub *ws; /* /execute/ws (ws.h) */
    /* an API node's queue (REDIS_URL set), or NULL: given before http_start (asynchronous
     * submissions use it too) or made by it; stopped by http_stop */
    struct cluster_api *cluster;
    /* the listening socket and the thread that accepts on it (libmicrohttpd is handed each
     * connection) */
    int listen_fd;
    int accept_wake; /* eventfd that stops the acceptor */
    pthread_t acceptor;
    bool acceptor_started;
};

/* On success the server owns listen_fd. */
int http_start(struct http_server *s, int listen_fd, struct pipeline *p,
               const struct ev_config *cfg, struct ev_err *err);
/* Stops accepting connections: the listening socket is closed, so new ones are refused;
 * connections already open go on (the pipeline refuses their new submissions once drained). */
void http_quiesce(struct http_server *s);
/* Waits until every request begun has been answered and sent (or dropped), or until the
 * monotonic clock reaches deadline_ns; returns whether all were. */
bool http_wait_answered(struct http_server *s, uint64_t deadline_ns);
/* Stops (the pipeline is stopped by the caller first, which refuses every waiting job): answers
 * what waits, waits for the workers and the handlers' threads, then stops libmicrohttpd. */
void http_stop(struct http_server *s);

#endif
