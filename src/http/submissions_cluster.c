/* The runner of asynchronous submissions on an API node (struct sub_runner, submissions.h):
 * the request is checked by the same code as POST /execute on this node (execute_prepare),
 * then queued through the cluster exactly as an /execute of an API node is (cluster_submit:
 * the same stream, the same MAX_QUEUE_SIZE, the body mapped rather than copied), and the answer
 * a worker writes back is recorded in the store by the node's result thread. No thread waits
 * for a submission here, and no code runs here.
 *
 * The cluster tells the API node nothing between a job's queueing and its answer, so in a
 * cluster a submission goes from queued to done (docs/async.md). */
#include "http/submissions_cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fileutil.h"
#include "http/routes.h"

/* A submission out in the cluster: the ctx of its job, until its answer is recorded. */
struct cluster_sub {
    struct cluster_runner *cr;
    uint64_t tag;
    bool tried; /* by cluster_runner_stop, under the runner's lock */
    char token[TOKEN_LEN + 1];
    struct cluster_sub *prev, *next;
};

struct cluster_runner {
    struct sub_runner base; /* first: the store holds a pointer to it */
    struct submissions *subs;
    struct cluster_api *api;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when the list empties */
    struct cluster_sub *head;
    atomic_uint_fast64_t next_tag;
};

/* Tags of async jobs have the top bit set, as the local runner's: the HTTP server withdraws a
 * job by its connection's id (counted from 1), and must never find one of these. The second
 * bit keeps them apart from cluster_execute's. */
#define ASYNC_TAG (3ull << 62)

static void link_sub(struct cluster_runner *cr, struct cluster_sub *cs)
{
    pthread_mutex_lock(&cr->mu);
    cs->prev = NULL;
    cs->next = cr->head;
    if (cr->head)
        cr->head->prev = cs;
    cr->head = cs;
    pthread_mutex_unlock(&cr->mu);
}

static void unlink_sub(struct cluster_runner *cr, struct cluster_sub *cs)
{
    pthread_mutex_lock(&cr->mu);
    if (cs->prev)
        cs->prev->next = cs->next;
    else
        cr->head = cs->next;
    if (cs->next)
        cs->next->prev = cs->prev;
    if (!cr->head)
        pthread_cond_broadcast(&cr->cv);
    pthread_mutex_unlock(&cr->mu);
}

/* Records an answer and forgets the submission; its slot in the list is given up last, so
 * that a drain that saw it empty knows every answer was recorded. */
static void record(struct cluster_sub *cs, int status, json_t *answer)
{
    subs_finished(cs->cr->subs, cs->token, status, answer);
    unlink_sub(cs->cr, cs);
    free(cs);
}

/* The node's result thread, with the answer a worker wrote (or the 503 of a lost job, or of
 * the API side stopping). */
static void on_answer(void *ctx, int status, char *json, size_t len)
{
    struct cluster_sub *cs = ctx;
    json_error_t je;
    json_t *answer = json ? json_loadb(json, len, 0, &je) : NULL;
    free(json);
    if (!json_is_object(answer)) {
        fprintf(stderr,
                "envicutor: async: submission %.8s…: a worker's answer is not a JSON "
                "object\n",
                cs->token);
        json_decref(answer);
        status = 500;
        answer = json_pack("{s:s}", "message", "Internal server error");
    }
    record(cs, status, answer);
    json_decref(answer);
}

static int cluster_start(struct sub_runner *self, const struct route_ctx *ctx, struct request *rq,
                         const char *token, struct reply *r)
{
    struct cluster_runner *cr = (struct cluster_runner *)self;
    /* checked here as /execute is on this node; the worker checks the body again against its
     * own runtimes */
    struct exec_job *job = execute_prepare(ctx, rq, r);
    if (!job)
        return -1;
    exec_job_free(job);
    struct cluster_sub *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        reply_internal(r, rq, "out of memory");
        return -1;
    }
    cs->cr = cr;
    cs->tag = ASYNC_TAG | atomic_fetch_add(&cr->next_tag, 1);
    snprintf(cs->token, sizeof(cs->token), "%s", token);
    char flags[64];
    request_flags_text(rq, flags, sizeof(flags));
    /* listed first: the answer may come back before cluster_submit returns */
    link_sub(cr, cs);
    struct ev_err err;
    if (cluster_submit(cr->api, cs->tag, rq->rid ? rq->rid : "-", flags, rq->body, rq->body_len,
                       rq->body_fd, on_answer, cs, &err) < 0) {
        unlink_sub(cr, cs);
        free(cs);
        fprintf(stderr, "req %s: submission not queued: %s\n", rq->rid ? rq->rid : "-", err.msg);
        reply_message(r, 503, "%s", err.msg);
        r->retry_after = 1;
        return -1;
    }
    fprintf(stderr, "req %s: submission %.8s… queued in the cluster\n", rq->rid ? rq->rid : "-",
            token);
    return 0;
}

struct cluster_runner *cluster_runner_start(struct submissions *subs, struct cluster_api *a,
                                            struct ev_err *err)
{
    struct cluster_runner *cr = calloc(1, sizeof(*cr));
    if (!cr) {
        ev_fail(err, ENOMEM, "the async runner");
        return NULL;
    }
    cr->base.start = cluster_start;
    cr->subs = subs;
    cr->api = a;
    pthread_mutex_init(&cr->mu, NULL);
    pthread_cond_init(&cr->cv, NULL);
    subs_set_runner(subs, &cr->base);
    return cr;
}

bool cluster_runner_drain(struct cluster_runner *cr, uint64_t deadline_ns)
{
    if (!cr)
        return true;
    pthread_mutex_lock(&cr->mu);
    while (cr->head && monotonic_ns() < deadline_ns) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cr->cv, &cr->mu, &ts);
    }
    bool none = !cr->head;
    pthread_mutex_unlock(&cr->mu);
    return none;
}

void cluster_runner_stop(struct cluster_runner *cr)
{
    if (!cr)
        return;
    subs_set_runner(cr->subs, NULL);
    struct reply r = {0};
    struct request rq = {.rid = "-"};
    reply_pipe_status(&r, &rq, PIPE_STOPPING, NULL);
    for (;;) {
        pthread_mutex_lock(&cr->mu);
        struct cluster_sub *next = cr->head;
        while (next && next->tried)
            next = next->next;
        uint64_t tag = next ? next->tag : 0;
        if (next)
            next->tried = true;
        pthread_mutex_unlock(&cr->mu);
        if (!next)
            break;
        /* NULL: its answer is being recorded by the result thread, awaited below */
        struct cluster_sub *cs = cluster_withdraw(cr->api, tag);
        if (cs)
            record(cs, r.status, r.json);
    }
    /* answers the result thread is recording now */
    pthread_mutex_lock(&cr->mu);
    while (cr->head)
        pthread_cond_wait(&cr->cv, &cr->mu);
    pthread_mutex_unlock(&cr->mu);
    json_decref(r.json);
    pthread_cond_destroy(&cr->cv);
    pthread_mutex_destroy(&cr->mu);
    free(cr);
}
