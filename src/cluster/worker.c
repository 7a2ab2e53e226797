#include "cluster/worker.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/keys.h"
#include "cluster/redis.h"
#include "cluster/registry.h"
#include "common/fileutil.h"
#include "common/request_id.h"
#include "format/stage_json.h"
#include "http/reply.h"
#include "http/routes.h"

/* How often the beat runs: heartbeat, idle times of held jobs, cancel flags. */
#define BEAT_MS 250

struct worker;

struct wjob {
    struct worker *w;
    char eid[48]; /* the entry on the stream */
    char job[48]; /* the job's id, of the API node's making */
    char rid[REQUEST_ID_MAX + 1];
    char reply[128];
    char flags[64];
    redisReply *entry; /* owns the body */
    const char *body;
    size_t len;
    unsigned attempt;
    atomic_bool cancelled;
    struct wjob *next;
};

struct worker {
    struct pipeline *p;
    const struct ev_config *cfg;
    atomic_bool *stop;
    char name[128];
    char beat_key[160];
    struct rconn rd, cmd, beat; /* the reading loop's, the jobs' results, the beat's */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned running;
    struct wjob *jobs;
    struct registry *reg;
};

static void copy_field(char *dst, size_t size, const redisReply *fields, const char *name)
{
    const redisReply *v = stream_field(fields, name);
    snprintf(dst, size, "%s", v && v->type == REDIS_REPLY_STRING ? v->str : "");
}

/* Writes the job's answer to its API node and acknowledges it, in one transaction: the entry
 * leaves the stream only with its result written (the API node relies on it, api.c). Tried
 * again while Redis is away; a worker stopped meanwhile leaves the job to another. */
static bool finish_job(struct worker *w, struct wjob *j, int status, const char *json, size_t len)
{
    for (;;) {
        struct ev_err err;
        pthread_mutex_lock(&w->cmd.mu);
        redisReply *r = rconn_cmd(&w->cmd, &err, "MULTI");
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (r)
            freeReplyObject(r);
        if (ok && json) {
            char st[16];
            snprintf(st, sizeof(st), "%d", status);
            /* MAXLEN bounds the stream of an API node that went away without reading it */
            r = rconn_cmd(&w->cmd, &err, "XADD %s MAXLEN ~ 10000 * job %s status %s body %b",
                          j->reply, j->job, st, json, len);
            ok = r != NULL;
            if (r)
                freeReplyObject(r);
            r = ok ? rconn_cmd(&w->cmd, &err, "EXPIRE %s %d", j->reply, RESULTS_TTL) : NULL;
            ok = r != NULL;
            if (r)
                freeReplyObject(r);
        }
        r = ok ? rconn_cmd(&w->cmd, &err, "XACK %s %s %s", KEY_JOBS, JOBS_GROUP, j->eid) : NULL;
        ok = r != NULL;
        if (r)
            freeReplyObject(r);
        r = ok ? rconn_cmd(&w->cmd, &err, "XDEL %s %s", KEY_JOBS, j->eid) : NULL;
        ok = r != NULL;
        if (r)
            freeReplyObject(r);
        r = ok ? rconn_cmd(&w->cmd, &err, "HDEL " KEY_SKIPS " %s", j->eid) : NULL;
        ok = r != NULL;
        if (r)
            freeReplyObject(r);
        r = ok ? rconn_cmd(&w->cmd, &err, "EXEC") : NULL;
        ok = r && r->type == REDIS_REPLY_ARRAY;
        if (r)
            freeReplyObject(r);
        pthread_mutex_unlock(&w->cmd.mu);
        if (ok)
            return true;
        fprintf(stderr, "envicutor: worker: req %s job %s: write the result: %s\n", j->rid, j->job,
                r ? "EXEC failed" : err.msg);
        if (atomic_load(w->stop))
            return false;
        pthread_mutex_lock(&w->cmd.mu);
        rconn_wait_retry(&w->cmd, 1000);
        pthread_mutex_unlock(&w->cmd.mu);
    }
}

static bool flag_set(struct worker *w, const char *job)
{
    struct ev_err err;
    pthread_mutex_lock(&w->cmd.mu);
    redisReply *r = rconn_cmd(&w->cmd, &err, "EXISTS " KEY_CANCEL_PREFIX "%s", job);
    pthread_mutex_unlock(&w->cmd.mu);
    bool set = r && r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    if (r)
        freeReplyObject(r);
    return set;
}

static char *xx_answer(const char *why, size_t *len)
{
    struct sbx_result res = {.status = SBX_XX, .exit_code = -1, .exit_signal = -1};
    snprintf(res.message, sizeof(res.message), "%s", why);
    json_t *j = json_pack("{s:n,s:n,s:o}", "extract", "compile", "run", stage_result_json(&res, 0));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    *len = text ? strlen(text) : 0;
    return text;
}

/* The job names a runtime that this worker does not have as the registry defines it, and
 * another live worker does: the job stays in the group's pending list, made idle at once (XCLAIM
 * ... IDLE) so that the next XAUTOCLAIM of any worker takes it, and the pass is counted in
 * envicutor:skips so that it is not counted as an attempt. Nothing is lost (it is never
 * acknowledged here) and it cannot go round for ever: when no live worker has the registry's
 * runtime, the worker that holds it answers it (run_job). */
static void pass_on(struct worker *w, struct wjob *j, int64_t runtime)
{
    struct ev_err err;
    pthread_mutex_lock(&w->cmd.mu);
    redisReply *r = rconn_cmd(&w->cmd, &err, "HINCRBY " KEY_SKIPS " %s 1", j->eid);
    if (r)
        freeReplyObject(r);
    r = rconn_cmd(&w->cmd, &err, "XCLAIM %s %s %s 0 %s IDLE %" PRIu64 " JUSTID", KEY_JOBS,
                  JOBS_GROUP, w->name, j->eid, w->cfg->job_reclaim_seconds * 1000);
    if (r)
        freeReplyObject(r);
    pthread_mutex_unlock(&w->cmd.mu);
    fprintf(stderr,
            "envicutor: worker: req %s job %s passed on: runtime %lld here is not the "
            "registry's\n",
            j->rid, j->job, (long long)runtime);
}

static void run_job(struct worker *w, struct wjob *j)
{
    uint64_t t0 = monotonic_ns();
    fprintf(stderr, "envicutor: worker: req %s job %s attempt %u started\n", j->rid, j->job,
            j->attempt);
    if (flag_set(w, j->job)) {
        fprintf(stderr, "envicutor: worker: req %s job %s cancelled before it ran\n", j->rid,
                j->job);
        finish_job(w, j, 0, NULL, 0);
        return;
    }
    struct request rq = {.rid = j->rid,
                         .method = "POST",
                         .path = "/execute",
                         .rest = "",
                         .body = j->body,
                         .body_len = j->len,
                         .body_fd = -1,
                         .fd = -1,
                         .flags = j->flags,
                         .cancelled = &j->cancelled};
    struct reply r = {0};
    struct route_ctx ctx = {.pipeline = w->p, .cfg = w->cfg, .registry = w->reg};
    pipeline_set_request_id(j->rid);
    /* each runtime the job names is checked against the registry (routes_execute.c's
     * get_runtime, cluster_runtime) */
    execute_whole(&ctx, &rq, &r);
    pipeline_set_request_id(NULL);
    if (r.elsewhere && registry_elsewhere(w->reg, r.elsewhere)) {
        json_decref(r.json);
        pass_on(w, j, r.elsewhere);
        return;
    }
    double ms = (double)(monotonic_ns() - t0) / 1e6;
    if (r.drop) {
        fprintf(stderr, "envicutor: worker: req %s job %s cancelled, its client went away %.1fms\n",
                j->rid, j->job, ms);
        finish_job(w, j, 0, NULL, 0);
        return;
    }
    if (atomic_load(w->stop) && r.status == 503) {
        /* cut short by the worker's own shutdown: left for another worker */
        fprintf(stderr, "envicutor: worker: req %s job %s left to another worker\n", j->rid,
                j->job);
        json_decref(r.json);
        return;
    }
    char *text = r.json ? json_dumps(r.json, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(r.json);
    if (!text) {
        size_t len;
        text = xx_answer("the worker ran out of memory building the answer", &len);
    }
    if (text && finish_job(w, j, r.status ? r.status : 500, text, strlen(text)))
        fprintf(stderr, "envicutor: worker: req %s job %s done %d %.1fms\n", j->rid, j->job,
                r.status, ms);
    free(text);
}

static void *job_main(void *arg)
{
    struct wjob *j = arg;
    struct worker *w = j->w;
    run_job(w, j);
    pthread_mutex_lock(&w->mu);
    for (struct wjob **pp = &w->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    w->running--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    freeReplyObject(j->entry);
    free(j);
    return NULL;
}

/* Takes one entry ([id, [field, value, ...]]) of XREADGROUP or XAUTOCLAIM: runs it, or answers
 * it XX when it has been delivered too many times. */
static void take_entry(struct worker *w, redisReply *owner, redisReply *e, unsigned attempt)
{
    struct wjob *j = calloc(1, sizeof(*j));
    if (!j) {
        freeReplyObject(owner);
        return; /* left pending: claimed again later */
    }
    j->w = w;
    j->entry = owner;
    j->attempt = attempt;
    snprintf(j->eid, sizeof(j->eid), "%s", e->element[0]->str);
    redisReply *fields = e->element[1];
    copy_field(j->job, sizeof(j->job), fields, "job");
    copy_field(j->rid, sizeof(j->rid), fields, "rid");
    copy_field(j->reply, sizeof(j->reply), fields, "reply");
    copy_field(j->flags, sizeof(j->flags), fields, "flags");
    const redisReply *body = stream_field(fields, "body");
    j->body = body && body->type == REDIS_REPLY_STRING ? body->str : "";
    j->len = body && body->type == REDIS_REPLY_STRING ? body->len : 0;
    if (!j->job[0] || !j->reply[0]) {
        /* not an API node's: nobody waits for an answer */
        fprintf(stderr, "envicutor: worker: entry %s of %s has no job or reply field; dropped\n",
                j->eid, KEY_JOBS);
        finish_job(w, j, 0, NULL, 0);
        freeReplyObject(owner);
        free(j);
        return;
    }
    if (attempt > w->cfg->job_max_attempts) {
        char why[200];
        snprintf(why, sizeof(why),
                 "the job was given to workers %u times and none finished it (JOB_MAX_ATTEMPTS "
                 "%" PRIu64 ")",
                 attempt - 1, w->cfg->job_max_attempts);
        size_t len;
        char *text = xx_answer(why, &len);
        fprintf(stderr, "envicutor: worker: req %s job %s: %s\n", j->rid, j->job, why);
        if (text)
            finish_job(w, j, 200, text, len);
        free(text);
        freeReplyObject(owner);
        free(j);
        return;
    }
    pthread_mutex_lock(&w->mu);
    j->next = w->jobs;
    w->jobs = j;
    w->running++;
    pthread_mutex_unlock(&w->mu);
    pthread_attr_t a;
    pthread_t th;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int e2 = pthread_create(&th, &a, job_main, j);
    pthread_attr_destroy(&a);
    if (e2) {
        fprintf(stderr, "envicutor: worker: start a thread for job %s: %s\n", j->job, strerror(e2));
        job_main(j); /* runs it here rather than leave the slot counted */
    }
}

/* How many times the entry has been delivered (XPENDING's count), after a claim. */
static unsigned deliveries(struct worker *w, const char *eid)
{
    struct ev_err err;
    redisReply *r =
        rconn_cmd(&w->rd, &err, "XPENDING %s %s %s %s 1", KEY_JOBS, JOBS_GROUP, eid, eid);
    unsigned n = 1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 4 &&
        r->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
        n = (unsigned)r->element[0]->element[3]->integer;
    if (r)
        freeReplyObject(r);
    return n;
}

static void *beat_main(void *arg)
{
    struct worker *w = arg;
    uint64_t ttl_ms = w->cfg->job_reclaim_seconds * 1000;
    while (!atomic_load(w->stop)) {
        pthread_mutex_lock(&w->mu);
        unsigned running = w->running;
        size_t n = 0;
        for (struct wjob *j = w->jobs; j; j = j->next)
            n++;
        char(*eids)[48] = n ? calloc(n, 48) : NULL;
        char(*jobs)[48] = n ? calloc(n, 48) : NULL;
        size_t k = 0;
        for (struct wjob *j = w->jobs; j && eids && jobs; j = j->next, k++) {
            memcpy(eids[k], j->eid, 48);
            memcpy(jobs[k], j->job, 48);
        }
        pthread_mutex_unlock(&w->mu);
        struct ev_err err;
        char slots[64];
        snprintf(slots, sizeof(slots), "%u %u %lld", w->cfg->max_concurrent,
                 w->cfg->max_concurrent - running, registry_applied(w->reg));
        redisReply *r =
            rconn_cmd(&w->beat, &err, "SET %s %s PX %" PRIu64, w->beat_key, slots, ttl_ms);
        if (r)
            freeReplyObject(r);
        /* the runtime-info hashes it published live as long as its heartbeat */
        r = r ? rconn_cmd(&w->beat, &err, "PEXPIRE " KEY_WORKER_RT_PREFIX "%s %" PRIu64, w->name,
                          ttl_ms)
              : NULL;
        if (r)
            freeReplyObject(r);
        for (size_t i = 0; i < k && r; i++) {
            /* the job's idle time back to zero: it is not a dead worker's */
            r = rconn_cmd(&w->beat, &err, "XCLAIM %s %s %s 0 %s JUSTID", KEY_JOBS, JOBS_GROUP,
                          w->name, eids[i]);
            if (r)
                freeReplyObject(r);
            r = r ? rconn_cmd(&w->beat, &err, "EXISTS " KEY_CANCEL_PREFIX "%s", jobs[i]) : NULL;
            if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
                pthread_mutex_lock(&w->mu);
                for (struct wjob *j = w->jobs; j; j = j->next)
                    if (strcmp(j->job, jobs[i]) == 0)
                        atomic_store(&j->cancelled, true);
                pthread_mutex_unlock(&w->mu);
            }
            if (r)
                freeReplyObject(r);
        }
        free(eids);
        free(jobs);
        if (!r)
            rconn_wait_retry(&w->beat, BEAT_MS);
        sleep_ms(BEAT_MS);
    }
    struct ev_err err;
    redisReply *r =
        rconn_cmd(&w->beat, &err, "DEL %s " KEY_WORKER_RT_PREFIX "%s", w->beat_key, w->name);
    if (r)
        freeReplyObject(r);
    return NULL;
}

static bool running_here(struct worker *w, const char *eid)
{
    pthread_mutex_lock(&w->mu);
    const struct wjob *j = w->jobs;
    while (j && strcmp(j->eid, eid) != 0)
        j = j->next;
    pthread_mutex_unlock(&w->mu);
    return j != NULL;
}

/* The group, made once per connection: after Redis restarted without its data it is gone. */
static int make_group(struct worker *w, struct ev_err *err)
{
    redisReply *r = rconn_cmd(&w->rd, err, "XGROUP CREATE %s %s 0 MKSTREAM", KEY_JOBS, JOBS_GROUP);
    if (!r)
        return -1;
    bool ok = r->type != REDIS_REPLY_ERROR || strncmp(r->str, "BUSYGROUP", 9) == 0;
    if (!ok)
        ev_fail(err, 0, "XGROUP CREATE: %.200s", r->str);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* One job for a free slot: a dead worker's first (XAUTOCLAIM, at most once a second), else a
 * new one (XREADGROUP, waiting up to a second). Returns whether one was taken. */
static bool take_one(struct worker *w, unsigned *group_gen, uint64_t *next_claim)
{
    struct ev_err err;
    if (*group_gen != w->rd.generation || !w->rd.c) {
        if (make_group(w, &err) < 0) {
            fprintf(stderr, "envicutor: worker: %s\n", err.msg);
            rconn_wait_retry(&w->rd, 1000);
            return false;
        }
        *group_gen = w->rd.generation;
        fprintf(stderr, "envicutor: worker %s: connected to Redis, taking jobs\n", w->name);
    }
    uint64_t now = monotonic_ns();
    if (now >= *next_claim) {
        *next_claim = now + 1000000000ull;
        redisReply *r =
            rconn_cmd(&w->rd, &err, "XAUTOCLAIM %s %s %s %" PRIu64 " 0-0 COUNT 1", KEY_JOBS,
                      JOBS_GROUP, w->name, w->cfg->job_reclaim_seconds * 1000);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
            r->element[1]->type == REDIS_REPLY_ARRAY && r->element[1]->elements == 1 &&
            r->element[1]->element[0]->type == REDIS_REPLY_ARRAY &&
            r->element[1]->element[0]->elements == 2 &&
            r->element[1]->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
            redisReply *e = r->element[1]->element[0];
            if (running_here(w, e->element[0]->str)) {
                /* our own, whose beat came late (a loaded machine): the claim only refreshed
                 * it; it is not run twice here */
                freeReplyObject(r);
                return false;
            }
            unsigned n = deliveries(w, e->element[0]->str);
            redisReply *sk = rconn_cmd(&w->rd, &err, "HGET " KEY_SKIPS " %s", e->element[0]->str);
            unsigned skips = sk && sk->type == REDIS_REPLY_STRING ? (unsigned)atoi(sk->str) : 0;
            if (sk)
                freeReplyObject(sk);
            /* passes by workers without the registry's runtime are not attempts */
            n = n > skips ? n - skips : 1;
            fprintf(stderr, "envicutor: worker %s: claimed job entry %s of a silent worker\n",
                    w->name, e->element[0]->str);
            take_entry(w, r, e, n);
            return true;
        }
        if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) == 0)
            *group_gen = 0;
        if (r)
            freeReplyObject(r);
        else
            return false;
    }
    redisReply *r =
        rconn_cmd(&w->rd, &err, "XREADGROUP GROUP %s %s COUNT 1 BLOCK 1000 STREAMS %s >",
                  JOBS_GROUP, w->name, KEY_JOBS);
    if (!r) {
        rconn_wait_retry(&w->rd, 1000);
        return false;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOGROUP", 7) == 0)
            *group_gen = 0;
        else
            fprintf(stderr, "envicutor: worker: XREADGROUP: %s\n", r->str);
        freeReplyObject(r);
        return false;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2 &&
        r->element[0]->element[1]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->element[1]->elements == 1) {
        redisReply *e = r->element[0]->element[1]->element[0];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[1]->type == REDIS_REPLY_ARRAY) {
            take_entry(w, r, e, 1);
            return true;
        }
    }
    freeReplyObject(r);
    return false;
}

int worker_run(struct pipeline *p, const struct ev_config *cfg, atomic_bool *stop,
               struct ev_err *err)
{
    struct redis_addr addr;
    if (redis_url_parse(cfg->redis_url, &addr, err) < 0)
        return -1;
    static struct worker w;
    w.p = p;
    w.cfg = cfg;
    w.stop = stop;
    char host[64] = "host";
    if (gethostname(host, sizeof(host) - 1) < 0)
        snprintf(host, sizeof(host), "host");
    host[sizeof(host) - 1] = '\0';
    snprintf(w.name, sizeof(w.name), "%s-%d", host, (int)getpid());
    snprintf(w.beat_key, sizeof(w.beat_key), KEY_WORKER_PREFIX "%s", w.name);
    /* a reply may take its whole BLOCK (1 s) to come */
    rconn_init(&w.rd, &addr, 5000);
    rconn_init(&w.cmd, &addr, 10000);
    rconn_init(&w.beat, &addr, 5000);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    /* the registry's runtimes first: no heartbeat (so no API node waits for this worker's
     * answers) and no job before they are installed */
    w.reg = registry_open(cfg, w.name, err);
    if (!w.reg)
        return -1;
    if (registry_sync_start(w.reg, p, stop, err) < 0) {
        registry_close(w.reg);
        return atomic_load(stop) ? 0 : -1;
    }
    fprintf(stderr, "envicutor: worker %s: runtimes in line with the registry (version %lld)\n",
            w.name, registry_applied(w.reg));
    pthread_t beat;
    int e = pthread_create(&beat, NULL, beat_main, &w);
    if (e)
        return ev_fail(err, e, "start the worker's heartbeat");
    fprintf(stderr, "envicutor: worker %s of the cluster at %s:%u, %u slots\n", w.name, addr.host,
            addr.port, cfg->max_concurrent);
    unsigned group_gen = 0;
    uint64_t next_claim = 0;
    while (!atomic_load(stop)) {
        pthread_mutex_lock(&w.mu);
        while (w.running >= cfg->max_concurrent && !atomic_load(stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&w.cv, &w.mu, &ts);
        }
        pthread_mutex_unlock(&w.mu);
        if (atomic_load(stop))
            break;
        take_one(&w, &group_gen, &next_claim);
    }
    pthread_mutex_lock(&w.mu);
    while (w.running > 0)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_join(beat, NULL);
    registry_close(w.reg);
    rconn_close(&w.rd);
    rconn_close(&w.cmd);
    rconn_close(&w.beat);
    return 0;
}
