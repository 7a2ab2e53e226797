/* The runner of asynchronous submissions on one node (struct sub_runner, submissions.h): the
 * request is checked by the same code as POST /execute (execute_prepare), waits in the same
 * scheduler queue, under the same bounds, as a small job without a thread, and runs in one of
 * MAX_CONCURRENT_SUBMISSIONS workers of its own (execute_run), which then hands the answer to
 * the store. Nothing here waits for a callback: the store delivers those after the turn was
 * given back. */
#include "http/submissions_local.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/request_id.h"
#include "http/routes.h"

struct local_job {
    struct local_runner *lr;
    char token[TOKEN_LEN + 1];
    char rid[REQUEST_ID_MAX + 1];
    struct exec_job *job;
    struct request rq; /* the request as the run sees it: no connection, no client to lose */
    int body_fd;       /* a spilled body: our own descriptor of the connection's file */
    struct sched_ticket ticket;
    struct local_job *next;
};

struct local_runner {
    struct sub_runner base; /* first: the store holds a pointer to it */
    struct submissions *subs;
    struct route_ctx ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct local_job *head, *tail; /* granted (or refused at a stop), for the workers */
    bool closing;
    pthread_t *workers;
    unsigned n_workers;
    atomic_uint_fast64_t next_tag;
};

/* Tags of async tickets have the top bit set: the HTTP server withdraws a waiting ticket by its
 * connection's id (counted from 1), and must never find one of these. */
#define ASYNC_TAG (1ull << 63)

static void job_free(struct local_job *lj)
{
    exec_job_free(lj->job);
    if (lj->body_fd >= 0)
        close(lj->body_fd);
    free(lj);
}

static void push_ready(struct local_job *lj)
{
    struct local_runner *lr = lj->lr;
    pthread_mutex_lock(&lr->mu);
    lj->next = NULL;
    if (lr->tail)
        lr->tail->next = lj;
    else
        lr->head = lj;
    lr->tail = lj;
    pthread_cond_signal(&lr->cv);
    pthread_mutex_unlock(&lr->mu);
}

/* The scheduler's call, with its lock held, when a waiting job leaves the queue. */
static void on_ticket(struct sched_ticket *t)
{
    push_ready((struct local_job *)((char *)t - offsetof(struct local_job, ticket)));
}

static void *worker_main(void *arg)
{
    struct local_runner *lr = arg;
    for (;;) {
        pthread_mutex_lock(&lr->mu);
        while (!lr->head && !lr->closing)
            pthread_cond_wait(&lr->cv, &lr->mu);
        struct local_job *lj = lr->head;
        if (lj) {
            lr->head = lj->next;
            if (!lr->head)
                lr->tail = NULL;
        }
        pthread_mutex_unlock(&lr->mu);
        if (!lj)
            return NULL;
        struct reply r = {0};
        pipeline_set_request_id(lj->rid);
        if (lj->ticket.granted) {
            subs_running(lr->subs, lj->token);
            execute_run(&lr->ctx, lj->job, &lj->rq, &r);
        } else {
            reply_pipe_status(&r, &lj->rq, PIPE_STOPPING, NULL);
        }
        pipeline_set_request_id(NULL);
        /* the turn is given back by now: the store's work, callbacks included, holds none */
        if (!r.json)
            reply_message(&r, 500, "Internal server error");
        subs_finished(lr->subs, lj->token, r.status, r.json);
        json_decref(r.json);
        job_free(lj);
    }
}

static int local_start(struct sub_runner *self, const struct route_ctx *ctx, struct request *rq,
                       const char *token, struct reply *r)
{
    struct local_runner *lr = (struct local_runner *)self;
    struct local_job *lj = calloc(1, sizeof(*lj));
    if (!lj) {
        reply_internal(r, rq, "out of memory");
        return -1;
    }
    lj->lr = lr;
    lj->body_fd = -1;
    snprintf(lj->token, sizeof(lj->token), "%s", token);
    snprintf(lj->rid, sizeof(lj->rid), "%s", rq->rid ? rq->rid : "-");
    /* A spilled body stays in its file until the turn comes, as for /execute; the connection
     * closes its descriptor when it is answered, so the job keeps one of its own. */
    if (rq->body_fd >= 0) {
        lj->body_fd = fcntl(rq->body_fd, F_DUPFD_CLOEXEC, 0);
        if (lj->body_fd < 0) {
            reply_internal(r, rq, "dup a spilled body");
            free(lj);
            return -1;
        }
    }
    struct request checked = *rq;
    checked.body_fd = lj->body_fd;
    lj->job = execute_prepare(ctx, &checked, r);
    if (!lj->job) {
        job_free(lj);
        return -1;
    }
    lj->rq = (struct request){.id = rq->id,
                              .rid = lj->rid,
                              .method = "POST",
                              .path = "/submissions",
                              .rest = "",
                              .body = "",
                              .body_len = rq->body_len,
                              .body_fd = lj->body_fd,
                              .conn = NULL,
                              .fd = -1};
    lj->ticket = (struct sched_ticket){.notify = on_ticket,
                                       .tag = ASYNC_TAG | atomic_fetch_add(&lr->next_tag, 1)};
    if (lj->body_fd >= 0)
        lj->ticket.spilled = rq->body_len;
    else
        lj->ticket.mem = rq->body_len;
    /* The scheduler's own lock around the enqueue and the look at granted: once it is
     * released, a queued job may be granted, run and freed by a worker at any moment. */
    struct sched *sc = &lr->ctx.pipeline->sched;
    pthread_mutex_lock(&sc->mu);
    enum sched_outcome o = sched_enqueue_job(sc, &lj->ticket, SCHED_SUBMISSION);
    bool now = o == SCHED_GRANTED && lj->ticket.granted;
    pthread_mutex_unlock(&sc->mu);
    if (o != SCHED_GRANTED) {
        reply_pipe_status(r, rq, o == SCHED_FULL ? PIPE_QUEUE_FULL : PIPE_STOPPING, NULL);
        job_free(lj);
        return -1;
    }
    if (now)
        push_ready(lj);
    return 0;
}

struct local_runner *local_runner_start(struct submissions *subs, struct pipeline *p,
                                        const struct ev_config *cfg, struct ev_err *err)
{
    struct local_runner *lr = calloc(1, sizeof(*lr));
    if (!lr) {
        ev_fail(err, ENOMEM, "the async runner");
        return NULL;
    }
    lr->base.start = local_start;
    lr->subs = subs;
    lr->ctx = (struct route_ctx){.pipeline = p, .cfg = cfg, .subs = subs};
    pthread_mutex_init(&lr->mu, NULL);
    pthread_cond_init(&lr->cv, NULL);
    lr->workers = calloc(cfg->max_concurrent, sizeof(*lr->workers));
    if (!lr->workers) {
        ev_fail(err, ENOMEM, "the async runner");
        local_runner_stop(lr);
        return NULL;
    }
    for (; lr->n_workers < cfg->max_concurrent; lr->n_workers++) {
        int e = pthread_create(&lr->workers[lr->n_workers], NULL, worker_main, lr);
        if (e) {
            ev_fail(err, e, "start the async runner's workers");
            local_runner_stop(lr);
            return NULL;
        }
    }
    subs_set_runner(subs, &lr->base);
    return lr;
}

void local_runner_stop(struct local_runner *lr)
{
    if (!lr)
        return;
    pthread_mutex_lock(&lr->mu);
    lr->closing = true;
    pthread_cond_broadcast(&lr->cv);
    pthread_mutex_unlock(&lr->mu);
    for (unsigned i = 0; i < lr->n_workers; i++)
        pthread_join(lr->workers[i], NULL);
    if (lr->subs)
        subs_set_runner(lr->subs, NULL);
    free(lr->workers);
    pthread_cond_destroy(&lr->cv);
    pthread_mutex_destroy(&lr->mu);
    free(lr);
}
