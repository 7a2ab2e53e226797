#include "cluster/api.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cluster/keys.h"
#include "cluster/redis.h"
#include "cluster/registry.h"
#include "common/fileutil.h"
#include "common/metrics.h"

/* Connections for commands (enqueueing, cancelling, /health): libmicrohttpd's threads and the
 * watcher each take a free one, so a large body being sent holds back no other request. */
#define CMD_CONNECTIONS 3
/* A Redis that stops answering holds a thread of libmicrohttpd's at most this long per read
 * or write (hiredis's socket timeout counts each call, so a large body still goes through). */
#define CMD_TIMEOUT_MS 10000

/* A request waiting for its job's result. */
struct waiter {
    uint64_t tag;
    char job[48]; /* "<node>-<sequence>" */
    char eid[48]; /* its entry on the stream, "" until XADD has answered */
    cluster_done_fn *done;
    void *ctx;
    struct waiter *prev, *next;
};

struct cluster_api {
    const struct ev_config *cfg;
    char node[17];
    char results_key[64];
    struct rconn cmd[CMD_CONNECTIONS];
    struct rconn res; /* the result thread's */
    pthread_mutex_t mu;
    struct waiter *head;
    atomic_uint_fast64_t seq;
    atomic_bool stopping;
    pthread_t reader;
    bool reader_started;
    struct registry *reg;
};

struct registry *cluster_registry(struct cluster_api *a)
{
    return a->reg;
}

static struct rconn *take_cmd(struct cluster_api *a)
{
    for (int i = 0; i < CMD_CONNECTIONS; i++)
        if (pthread_mutex_trylock(&a->cmd[i].mu) == 0)
            return &a->cmd[i];
    struct rconn *c = &a->cmd[atomic_fetch_add(&a->seq, 1) % CMD_CONNECTIONS];
    pthread_mutex_lock(&c->mu);
    return c;
}

static void give_cmd(struct rconn *c)
{
    pthread_mutex_unlock(&c->mu);
}

static void link_waiter(struct cluster_api *a, struct waiter *w)
{
    pthread_mutex_lock(&a->mu);
    w->prev = NULL;
    w->next = a->head;
    if (a->head)
        a->head->prev = w;
    a->head = w;
    pthread_mutex_unlock(&a->mu);
}

/* a->mu held */
static void unlink_waiter(struct cluster_api *a, struct waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        a->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

/* a->mu held */
static struct waiter *find_job(struct cluster_api *a, const char *job)
{
    for (struct waiter *w = a->head; w; w = w->next)
        if (strcmp(w->job, job) == 0)
            return w;
    return NULL;
}

static char *message_json(const char *msg, size_t *len)
{
    json_t *j = json_pack("{s:s}", "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    *len = text ? strlen(text) : 0;
    return text;
}

/* The answer to a job: the waiter leaves the list, its caller gets status and body. */
static void answer_job(struct cluster_api *a, const char *job, int status, char *body, size_t len)
{
    pthread_mutex_lock(&a->mu);
    struct waiter *w = find_job(a, job);
    if (w)
        unlink_waiter(a, w);
    pthread_mutex_unlock(&a->mu);
    if (!w) {
        /* answered already (a job run twice), or its client went away */
        free(body);
        return;
    }
    w->done(w->ctx, status, body, len);
    free(w);
}

/* The entries of an XREAD's answer for our one stream: dispatched, deleted, *last updated. */
static void take_results(struct cluster_api *a, redisReply *rep, char *last, size_t last_size)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1)
        return;
    redisReply *stream = rep->element[0];
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements < 2 ||
        stream->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    redisReply *entries = stream->element[1];
    for (size_t i = 0; i < entries->elements; i++) {
        redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        snprintf(last, last_size, "%s", e->element[0]->str);
        const redisReply *job = stream_field(e->element[1], "job");
        const redisReply *st = stream_field(e->element[1], "status");
        redisReply *body = (redisReply *)stream_field(e->element[1], "body");
        if (job && st && body && job->type == REDIS_REPLY_STRING &&
            st->type == REDIS_REPLY_STRING && body->type == REDIS_REPLY_STRING) {
            /* the body is taken from the reply rather than copied: it may be megabytes */
            char *text = body->str;
            size_t len = body->len;
            body->str = NULL;
            body->len = 0;
            answer_job(a, job->str, atoi(st->str), text, len);
        }
        struct ev_err err;
        redisReply *d = rconn_cmd(&a->res, &err, "XDEL %s %s", a->results_key, last);
        if (d)
            freeReplyObject(d);
    }
}

/* After the result thread's connection was made again: Redis may have been restarted without
 * its data (docs/cluster.md, persistence), and then the jobs it held are gone and will never
 * be answered. A waiting job whose entry is no longer on the stream either finished (its
 * result was written in the same transaction that deleted the entry, so it is on this node's
 * result stream, read just after) or was lost: those are answered 503. */
static void answer_lost(struct cluster_api *a, char *last, size_t last_size)
{
    size_t n = 0, cap = 0;
    char(*gone)[48] = NULL;
    pthread_mutex_lock(&a->mu);
    for (struct waiter *w = a->head; w; w = w->next)
        cap++;
    char(*eids)[48] = cap ? calloc(cap, 48) : NULL;
    char(*jobs)[48] = cap ? calloc(cap, 48) : NULL;
    size_t k = 0;
    for (struct waiter *w = a->head; w && eids && jobs; w = w->next)
        if (w->eid[0]) {
            memcpy(eids[k], w->eid, 48);
            memcpy(jobs[k], w->job, 48);
            k++;
        }
    pthread_mutex_unlock(&a->mu);
    gone = k ? calloc(k, 48) : NULL;
    struct ev_err err;
    pthread_mutex_lock(&a->res.mu);
    for (size_t i = 0; i < k && gone; i++) {
        redisReply *r = rconn_cmd(&a->res, &err, "XRANGE %s %s %s", KEY_JOBS, eids[i], eids[i]);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 0)
            memcpy(gone[n++], jobs[i], 48);
        if (r)
            freeReplyObject(r);
    }
    redisReply *r =
        rconn_cmd(&a->res, &err, "XREAD COUNT 100000 STREAMS %s %s", a->results_key, last);
    if (r) {
        take_results(a, r, last, last_size);
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&a->res.mu);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *msg = message_json("The job was lost: Redis no longer holds it (was it restarted "
                                 "without persistence?); submit it again",
                                 &len);
        fprintf(stderr, "envicutor: cluster: job %s was lost with Redis's data\n", gone[i]);
        answer_job(a, gone[i], 503, msg, len);
    }
    free(gone);
    free(eids);
    free(jobs);
}

static void *reader_main(void *arg)
{
    struct cluster_api *a = arg;
    char last[48] = "0-0";
    unsigned seen = 0;
    while (!atomic_load(&a->stopping)) {
        struct ev_err err;
        pthread_mutex_lock(&a->res.mu);
        redisReply *rep = rconn_cmd(&a->res, &err, "XREAD COUNT 64 BLOCK 1000 STREAMS %s %s",
                                    a->results_key, last);
        /* a connection after the first: Redis may have lost what it held meanwhile */
        bool again = rep && a->res.generation != seen && a->res.generation > 1;
        if (rep)
            seen = a->res.generation;
        bool refused = rep && rep->type == REDIS_REPLY_ERROR;
        if (refused)
            fprintf(stderr, "envicutor: cluster: XREAD: %s\n", rep->str);
        else if (rep)
            take_results(a, rep, last, sizeof(last));
        pthread_mutex_unlock(&a->res.mu);
        if (rep)
            freeReplyObject(rep);
        else
            rconn_wait_retry(&a->res, 1000);
        if (refused)
            sleep_ms(1000); /* not a busy loop on a key someone made another type */
        if (again)
            answer_lost(a, last, sizeof(last));
    }
    return NULL;
}

struct cluster_api *cluster_api_start(const struct ev_config *cfg, struct ev_err *err)
{
    struct redis_addr addr;
    if (redis_url_parse(cfg->redis_url, &addr, err) < 0)
        return NULL;
    struct cluster_api *a = calloc(1, sizeof(*a));
    if (!a) {
        ev_fail(err, ENOMEM, "start the cluster's API node");
        return NULL;
    }
    a->cfg = cfg;
    uint64_t r;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = monotonic_ns() ^ (uint64_t)getpid() << 32;
    snprintf(a->node, sizeof(a->node), "%016" PRIx64, r);
    snprintf(a->results_key, sizeof(a->results_key), KEY_RESULTS_PREFIX "%s", a->node);
    for (int i = 0; i < CMD_CONNECTIONS; i++)
        rconn_init(&a->cmd[i], &addr, CMD_TIMEOUT_MS);
    rconn_init(&a->res, &addr, 5000);
    pthread_mutex_init(&a->mu, NULL);
    a->reg = registry_open(cfg, NULL, err);
    if (!a->reg) {
        cluster_api_stop(a);
        return NULL;
    }
    int e = pthread_create(&a->reader, NULL, reader_main, a);
    if (e) {
        ev_fail(err, e, "start the cluster's result thread");
        cluster_api_stop(a);
        return NULL;
    }
    a->reader_started = true;
    fprintf(stderr, "envicutor: API node %s of the cluster at %s:%u (no code runs here)\n", a->node,
            addr.host, addr.port);
    return a;
}

void cluster_api_stop(struct cluster_api *a)
{
    if (!a)
        return;
    atomic_store(&a->stopping, true);
    if (a->reader_started)
        pthread_join(a->reader, NULL);
    for (;;) {
        pthread_mutex_lock(&a->mu);
        struct waiter *w = a->head;
        if (w)
            unlink_waiter(a, w);
        pthread_mutex_unlock(&a->mu);
        if (!w)
            break;
        size_t len;
        char *msg = message_json("The server is shutting down", &len);
        w->done(w->ctx, 503, msg, len);
        free(w);
    }
    for (int i = 0; i < CMD_CONNECTIONS; i++)
        rconn_close(&a->cmd[i]);
    rconn_close(&a->res);
    registry_close(a->reg);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* Jobs waiting for a worker: the stream's entries less those a worker holds (XPENDING), the
 * same count MAX_QUEUE_SIZE bounds on one node. */
static int waiting_jobs(struct rconn *c, uint64_t *n, struct ev_err *err)
{
    redisReply *len = rconn_cmd(c, err, "XLEN %s", KEY_JOBS);
    if (!len)
        return -1;
    long long total = len->type == REDIS_REPLY_INTEGER ? len->integer : 0;
    freeReplyObject(len);
    redisReply *p = rconn_cmd(c, err, "XPENDING %s %s", KEY_JOBS, JOBS_GROUP);
    if (!p)
        return -1;
    long long held = 0;
    /* NOGROUP before the first worker made the group: nothing is held */
    if (p->type == REDIS_REPLY_ARRAY && p->elements >= 1 &&
        p->element[0]->type == REDIS_REPLY_INTEGER)
        held = p->element[0]->integer;
    freeReplyObject(p);
    *n = total > held ? (uint64_t)(total - held) : 0;
    return 0;
}

int cluster_submit(struct cluster_api *a, uint64_t tag, const char *rid, const char *flags,
                   const char *body, size_t len, int body_fd, cluster_done_fn *done, void *ctx,
                   struct ev_err *err)
{
    struct waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return ev_fail(err, ENOMEM, "queue the job");
    w->tag = tag;
    w->done = done;
    w->ctx = ctx;
    snprintf(w->job, sizeof(w->job), "%s-%" PRIu64, a->node,
             (uint64_t)atomic_fetch_add(&a->seq, 1));
    char job[48];
    memcpy(job, w->job, sizeof(job));
    /* Listed before the job exists, so that a result that comes back at once finds it. */
    link_waiter(a, w);
    void *map = NULL;
    if (body_fd >= 0 && len) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, body_fd, 0);
        if (map == MAP_FAILED) {
            map = NULL;
            ev_fail(err, errno, "map the request body");
            goto fail;
        }
        body = map;
    }
    struct rconn *c = take_cmd(a);
    if (a->cfg->max_queue != UINT32_MAX) {
        uint64_t waiting;
        if (waiting_jobs(c, &waiting, err) < 0) {
            give_cmd(c);
            goto fail;
        }
        if (waiting >= a->cfg->max_queue) {
            give_cmd(c);
            ev_fail(err, 0,
                    "The server is busy: the queue of waiting requests is full, try again later");
            goto fail;
        }
    }
    redisReply *rep = rconn_cmd(c, err, "XADD %s * job %s rid %s reply %s flags %s body %b",
                                KEY_JOBS, job, rid, a->results_key, flags, body, len);
    give_cmd(c);
    if (!rep)
        goto fail;
    if (rep->type != REDIS_REPLY_STRING) {
        ev_fail(err, 0, "Redis refused the job: %.200s",
                rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected answer to XADD");
        freeReplyObject(rep);
        goto fail;
    }
    pthread_mutex_lock(&a->mu);
    struct waiter *still = find_job(a, job);
    if (still)
        snprintf(still->eid, sizeof(still->eid), "%s", rep->str);
    pthread_mutex_unlock(&a->mu);
    /* the line that ties the request id to the job id the workers log */
    fprintf(stderr, "req %s: job %s queued\n", rid, job);
    freeReplyObject(rep);
    if (map)
        munmap(map, len);
    return 0;
fail:
    if (map)
        munmap(map, len);
    /* By id, not by pointer: a client that went away meanwhile has withdrawn (and freed) the
     * waiter, and its caller was told then; this failure is then no one's to answer. */
    pthread_mutex_lock(&a->mu);
    struct waiter *mine = find_job(a, job);
    if (mine)
        unlink_waiter(a, mine);
    pthread_mutex_unlock(&a->mu);
    free(mine);
    return mine ? -1 : 0;
}

void *cluster_withdraw(struct cluster_api *a, uint64_t tag)
{
    pthread_mutex_lock(&a->mu);
    struct waiter *w = a->head;
    while (w && w->tag != tag)
        w = w->next;
    if (w)
        unlink_waiter(a, w);
    pthread_mutex_unlock(&a->mu);
    if (!w)
        return NULL;
    void *ctx = w->ctx;
    struct ev_err err;
    struct rconn *c = take_cmd(a);
    redisReply *r = rconn_cmd(c, &err, "SET " KEY_CANCEL_PREFIX "%s 1 EX %d", w->job, CANCEL_TTL);
    if (r)
        freeReplyObject(r);
    else
        fprintf(stderr, "envicutor: cluster: cancel job %s: %s\n", w->job, err.msg);
    /* not delivered yet: it never will be; delivered: the worker's XACK still works */
    if (r && w->eid[0]) {
        r = rconn_cmd(c, &err, "XDEL %s %s", KEY_JOBS, w->eid);
        if (r)
            freeReplyObject(r);
    }
    give_cmd(c);
    fprintf(stderr, "envicutor: cluster: job %s cancelled, its client went away\n", w->job);
    free(w);
    return ctx;
}

struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    char *json;
    size_t len;
};

static void sync_done(void *ctx, int status, char *json, size_t len)
{
    struct sync_wait *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->done = true;
    s->status = status;
    s->json = json;
    s->len = len;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int cluster_execute(struct cluster_api *a, const char *rid, const char *flags, const char *body,
                    size_t len, bool (*cancelled)(void *ctx), void *ctx, int *status, char **json,
                    size_t *json_len, struct ev_err *err)
{
    struct sync_wait s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    /* the high bit keeps these tags apart from the HTTP server's connection numbers */
    uint64_t tag = (1ull << 63) | (uint64_t)atomic_fetch_add(&a->seq, 1);
    if (cluster_submit(a, tag, rid, flags, body, len, -1, sync_done, &s, err) < 0)
        return -1;
    pthread_mutex_lock(&s.mu);
    while (!s.done) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s.cv, &s.mu, &ts);
        if (!s.done && cancelled && cancelled(ctx)) {
            pthread_mutex_unlock(&s.mu);
            if (cluster_withdraw(a, tag))
                return ev_fail(err, ECANCELED, "the job was cancelled");
            pthread_mutex_lock(&s.mu); /* its answer is on its way */
        }
    }
    pthread_mutex_unlock(&s.mu);
    *status = s.status;
    *json = s.json;
    *json_len = s.len;
    return 0;
}

json_t *cluster_health(struct cluster_api *a, struct ev_err *err)
{
    json_t *workers = json_array();
    json_t *out = json_pack("{s:s,s:o}", "status", "Up and running", "workers", workers);
    if (!out) {
        ev_fail(err, ENOMEM, "health");
        return NULL;
    }
    long long free_slots = 0;
    struct rconn *c = take_cmd(a);
    char cursor[32] = "0";
    do {
        redisReply *r =
            rconn_cmd(c, err, "SCAN %s MATCH " KEY_WORKER_PREFIX "* COUNT 1000", cursor);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r) {
                ev_fail(err, 0, "SCAN: unexpected answer");
                freeReplyObject(r);
            }
            give_cmd(c);
            json_decref(out);
            return NULL;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str ? r->element[0]->str : "0");
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *key = keys->element[i]->str;
            redisReply *v = rconn_cmd(c, err, "GET %s", key);
            unsigned slots, fr;
            long long version = -1;
            /* a heartbeat that expired between SCAN and GET is a worker gone */
            if (v && v->type == REDIS_REPLY_STRING &&
                sscanf(v->str, "%u %u %lld", &slots, &fr, &version) >= 2) {
                json_array_append_new(workers, json_pack("{s:s,s:I,s:I,s:I}", "name",
                                                         key + strlen(KEY_WORKER_PREFIX), "slots",
                                                         (json_int_t)slots, "free", (json_int_t)fr,
                                                         "runtimes_version", (json_int_t)version));
                free_slots += fr;
            }
            if (v)
                freeReplyObject(v);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    give_cmd(c);
    json_object_set_new(out, "free_slots", json_integer(free_slots));
    return out;
}

/* The count an answer gives (an integer, or XPENDING's summary [count, first id, last id,
 * consumers]; no group yet: none taken), or -1 (Redis unreachable, or another answer). Frees r. */
static long long reply_count(redisReply *r)
{
    long long v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
             r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer;
    else if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) == 0)
        v = 0;
    if (r)
        freeReplyObject(r);
    return v;
}

void cluster_metrics(struct cluster_api *a, FILE *f)
{
    struct ev_err err;
    json_t *h = cluster_health(a, &err);
    long long len = -1, taken = -1;
    if (h) {
        struct rconn *c = take_cmd(a);
        len = reply_count(rconn_cmd(c, &err, "XLEN %s", KEY_JOBS));
        if (len >= 0)
            taken = reply_count(rconn_cmd(c, &err, "XPENDING %s %s", KEY_JOBS, JOBS_GROUP));
        give_cmd(c);
    }
    bool up = h && len >= 0 && taken >= 0;
    metrics_family(f, "envicutor_cluster_redis_up", "gauge",
                   "1 when this API node reached Redis for this answer, 0 when it did not (then "
                   "no other envicutor_cluster_ figure follows)");
    metrics_sample(f, "envicutor_cluster_redis_up", "", up ? 1 : 0);
    if (!up) {
        json_decref(h);
        return;
    }
    json_t *workers = json_object_get(h, "workers");
    uint64_t slots = 0;
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w)
    {
        slots += (uint64_t)json_integer_value(json_object_get(w, "slots"));
    }
    metrics_family(f, "envicutor_cluster_workers", "gauge",
                   "Workers alive (a heartbeat younger than JOB_RECLAIM_SECONDS)");
    metrics_sample(f, "envicutor_cluster_workers", "", json_array_size(workers));
    metrics_family(f, "envicutor_cluster_slots", "gauge",
                   "Submission slots of the live workers: all of them, and those free now");
    metrics_sample(f, "envicutor_cluster_slots", "state=\"all\"", slots);
    metrics_sample(f, "envicutor_cluster_slots", "state=\"free\"",
                   (uint64_t)json_integer_value(json_object_get(h, "free_slots")));
    metrics_family(f, "envicutor_cluster_jobs", "gauge",
                   "Jobs in the cluster's stream, of every API node: waiting for a worker, and "
                   "taken by one (running, or held by a worker that died until it is reclaimed)");
    metrics_sample(f, "envicutor_cluster_jobs", "state=\"waiting\"",
                   (uint64_t)(len > taken ? len - taken : 0));
    metrics_sample(f, "envicutor_cluster_jobs", "state=\"taken\"", (uint64_t)taken);
    json_decref(h);
}
