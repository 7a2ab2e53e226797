#include "cluster/registry.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cluster/keys.h"
#include "cluster/redis.h"
#include "common/fileutil.h"
#include "common/sha256.h"
#include "http/request.h"
#include "pipeline/runtime_info.h"
#include "pipeline/runtime_store.h"

/* How often a worker looks at the registry's version. */
#define WATCH_MS 250
#define CHANGE_TTL 86400
#define ACKS_TTL 3600
#define STR_(x) #x
#define TO_STR(x) STR_(x)

struct registry {
    const struct ev_config *cfg;
    struct redis_addr addr;
    struct rconn c;
    char worker[128]; /* "" on an API node */
    /* a worker's: */
    struct pipeline *p;
    atomic_bool *stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long long applied; /* -1 before the first sync */
    char epoch[40];    /* the registry's that applied counts in */
    pthread_t th;
    bool started;
};

struct registry *registry_open(const struct ev_config *cfg, const char *worker, struct ev_err *err)
{
    struct registry *g = calloc(1, sizeof(*g));
    if (!g) {
        ev_fail(err, ENOMEM, "open the runtime registry");
        return NULL;
    }
    if (redis_url_parse(cfg->redis_url, &g->addr, err) < 0) {
        free(g);
        return NULL;
    }
    g->cfg = cfg;
    snprintf(g->worker, sizeof(g->worker), "%s", worker ? worker : "");
    rconn_init(&g->c, &g->addr, 10000);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->applied = -1;
    return g;
}

void registry_close(struct registry *g)
{
    if (!g)
        return;
    registry_sync_stop(g);
    rconn_close(&g->c);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

/* One command on the registry's connection, under its lock; an error reply is a failure. */
static redisReply *cmd(struct registry *g, struct ev_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&g->c.mu);
    redisReply *r = rconn_vcmd(&g->c, err, fmt, ap);
    pthread_mutex_unlock(&g->c.mu);
    va_end(ap);
    if (r && r->type == REDIS_REPLY_ERROR) {
        ev_fail(err, 0, "Redis: %.200s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static long long reply_ll(const redisReply *r)
{
    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

static void digest_of(const char *def, size_t len, char out[72])
{
    unsigned char d[SHA256_LEN];
    sha256(def, len, d);
    char hex[2 * SHA256_LEN + 1];
    sha256_hex(d, hex);
    snprintf(out, 72, "sha256:%s", hex);
}

/* ---- An API node's side ------------------------------------------------------------------ */

/* The whole decision in Redis, so that two API nodes adding at once cannot both take a name or
 * an id. ARGV: name, def, wanted id ("0": the counter's next), digest. */
static const char add_script[] =
    "local ids, names = KEYS[1], KEYS[2]\n"
    "if redis.call('HEXISTS', names, ARGV[1]) == 1 then return {'name'} end\n"
    "local id = ARGV[3]\n"
    "if id ~= '0' then\n"
    "  if redis.call('ZSCORE', ids, id) then return {'id'} end\n"
    "  local nx = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
    "  if nx < tonumber(id) then redis.call('SET', KEYS[3], id) end\n"
    "else\n"
    "  repeat id = tostring(redis.call('INCR', KEYS[3])) until not redis.call('ZSCORE', ids, id)\n"
    "end\n"
    "redis.call('ZADD', ids, id, id)\n"
    "redis.call('HSET', names, ARGV[1], id)\n"
    "redis.call('DEL', KEYS[5] .. id)\n"
    "redis.call('HSET', KEYS[5] .. id, 'name', ARGV[1], 'def', ARGV[2], 'digest', ARGV[4])\n"
    "redis.call('SETNX', KEYS[7], ARGV[5])\n"
    "local v = redis.call('INCR', KEYS[4])\n"
    "redis.call('SET', KEYS[6] .. v, 'add ' .. id, 'EX', " TO_STR(
        CHANGE_TTL) ")\n"
                    "return {'ok', id, tostring(v)}\n";

static const char delete_script[] =
    "local id = ARGV[1]\n"
    "if not redis.call('ZSCORE', KEYS[1], id) then return {'none'} end\n"
    "local name = redis.call('HGET', KEYS[5] .. id, 'name')\n"
    "redis.call('ZREM', KEYS[1], id)\n"
    "if name then redis.call('HDEL', KEYS[2], name) end\n"
    "redis.call('DEL', KEYS[5] .. id)\n"
    "local v = redis.call('INCR', KEYS[4])\n"
    "redis.call('SET', KEYS[6] .. v, 'del ' .. id, 'EX', " TO_STR(
        CHANGE_TTL) ")\n"
                    "return {'ok', tostring(v)}\n";

#define SCRIPT_KEYS                                                                                \
    "7 " KEY_RT_IDS " " KEY_RT_NAMES " " KEY_RT_NEXT " " KEY_RT_VERSION " " KEY_RT_PREFIX          \
    " " KEY_RT_CHANGE_PREFIX " " KEY_RT_EPOCH

int registry_add(struct registry *g, const char *name, const char *def, size_t def_len,
                 int64_t want_id, int64_t *id, long long *version, enum registry_conflict *c,
                 struct ev_err *err)
{
    char want[32], digest[72], epoch[40];
    snprintf(want, sizeof(want), "%" PRId64, want_id > 0 ? want_id : 0);
    digest_of(def, def_len, digest);
    uint64_t rnd[2];
    if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd[0] = rnd[1] = monotonic_ns();
    snprintf(epoch, sizeof(epoch), "%016" PRIx64 "%016" PRIx64, rnd[0], rnd[1]);
    redisReply *r = cmd(g, err, "EVAL %s " SCRIPT_KEYS " %s %b %s %s %s", add_script, name, def,
                        def_len, want, digest, epoch);
    if (!r)
        return -1;
    int rc = 0;
    *c = REGISTRY_OK;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        rc = ev_fail(err, 0, "Redis: unexpected answer to the registry's script");
    else if (strcmp(r->element[0]->str, "name") == 0)
        *c = REGISTRY_NAME_TAKEN;
    else if (strcmp(r->element[0]->str, "id") == 0)
        *c = REGISTRY_ID_TAKEN;
    else if (r->elements == 3) {
        *id = reply_ll(r->element[1]);
        *version = reply_ll(r->element[2]);
    } else
        rc = ev_fail(err, 0, "Redis: unexpected answer to the registry's script");
    freeReplyObject(r);
    return rc;
}

int registry_delete(struct registry *g, int64_t id, bool *found, long long *version,
                    struct ev_err *err)
{
    char ids[32];
    snprintf(ids, sizeof(ids), "%" PRId64, id);
    redisReply *r = cmd(g, err, "EVAL %s " SCRIPT_KEYS " %s", delete_script, ids);
    if (!r)
        return -1;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        rc = ev_fail(err, 0, "Redis: unexpected answer to the registry's script");
    else if ((*found = strcmp(r->element[0]->str, "ok") == 0) && r->elements == 2)
        *version = reply_ll(r->element[1]);
    freeReplyObject(r);
    return rc;
}

json_t *registry_list(struct registry *g, struct ev_err *err)
{
    redisReply *r = cmd(g, err, "ZRANGE " KEY_RT_IDS " 0 -1");
    if (!r)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *n = cmd(g, err, "HGET " KEY_RT_PREFIX "%s name", r->element[i]->str);
        if (!n) {
            json_decref(arr);
            arr = NULL;
            break;
        }
        /* deleted between the two commands: not listed */
        if (n->type == REDIS_REPLY_STRING)
            json_array_append_new(
                arr,
                json_pack("{s:I,s:s}", "id", (json_int_t)reply_ll(r->element[i]), "name", n->str));
        freeReplyObject(n);
    }
    freeReplyObject(r);
    if (!arr && !err->msg[0])
        ev_fail(err, ENOMEM, "list the registry");
    return arr;
}

int registry_get(struct registry *g, int64_t id, char **def, size_t *def_len, char hash[72],
                 struct ev_err *err)
{
    *def = NULL;
    hash[0] = '\0';
    redisReply *r = cmd(g, err, "HMGET " KEY_RT_PREFIX "%" PRId64 " def hash", id);
    if (!r)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        *def = malloc(r->element[0]->len + 1);
        if (!*def)
            rc = ev_fail(err, ENOMEM, "read runtime %" PRId64 " from the registry", id);
        else {
            memcpy(*def, r->element[0]->str, r->element[0]->len + 1);
            *def_len = r->element[0]->len;
        }
        if (r->element[1]->type == REDIS_REPLY_STRING)
            snprintf(hash, 72, "%s", r->element[1]->str);
    }
    freeReplyObject(r);
    return rc;
}

json_t *registry_live_workers(struct registry *g, struct ev_err *err)
{
    json_t *out = json_array();
    char cursor[32] = "0";
    do {
        redisReply *r = cmd(g, err, "SCAN %s MATCH " KEY_WORKER_PREFIX "* COUNT 1000", cursor);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            json_decref(out);
            return NULL;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str ? r->element[0]->str : "0");
        for (size_t i = 0; out && i < r->element[1]->elements; i++)
            json_array_append_new(
                out, json_string(r->element[1]->element[i]->str + strlen(KEY_WORKER_PREFIX)));
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return out;
}

static json_t *no_answer(const char *worker, const char *why)
{
    return json_pack("{s:s,s:s,s:s}", "worker", worker, "status", "no answer", "message", why);
}

json_t *registry_wait(struct registry *g, long long version, json_t *workers, unsigned timeout_s,
                      struct ev_err *err)
{
    size_t n = json_array_size(workers);
    json_t **got = n ? calloc(n, sizeof(*got)) : NULL;
    if (n && !got) {
        ev_fail(err, ENOMEM, "wait for the workers");
        return NULL;
    }
    /* a connection of its own: BLPOP holds it up to a second, and the node's other requests
     * for the registry must not wait behind it */
    struct rconn c;
    rconn_init(&c, &g->addr, 5000);
    uint64_t deadline = monotonic_ns() + (uint64_t)timeout_s * 1000000000ull;
    size_t left = n;
    while (left > 0) {
        if (monotonic_ns() >= deadline) {
            char why[96];
            snprintf(why, sizeof(why), "no answer in %u s", timeout_s);
            for (size_t i = 0; i < n; i++)
                if (!got[i])
                    got[i] = no_answer(json_string_value(json_array_get(workers, i)), why);
            break;
        }
        struct ev_err e2;
        pthread_mutex_lock(&c.mu);
        redisReply *r = rconn_cmd(&c, &e2, "BLPOP " KEY_RT_ACKS_PREFIX "%lld 1", version);
        pthread_mutex_unlock(&c.mu);
        if (!r) {
            rconn_wait_retry(&c, 1000);
            continue;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            json_t *ack = json_loadb(r->element[1]->str, r->element[1]->len, 0, NULL);
            const char *who = json_string_value(json_object_get(ack, "worker"));
            size_t i = 0;
            while (who && i < n && strcmp(json_string_value(json_array_get(workers, i)), who))
                i++;
            if (who && i < n && !got[i]) {
                got[i] = ack;
                left--;
            } else {
                json_decref(ack); /* a worker that came up since: not waited for */
            }
        }
        freeReplyObject(r);
        /* a worker whose heartbeat went away will not answer: killed, or stopped (SIGSTOP,
         * a machine frozen) for JOB_RECLAIM_SECONDS */
        for (size_t i = 0; i < n && left > 0; i++) {
            if (got[i])
                continue;
            const char *w = json_string_value(json_array_get(workers, i));
            pthread_mutex_lock(&c.mu);
            redisReply *x = rconn_cmd(&c, &e2, "EXISTS " KEY_WORKER_PREFIX "%s", w);
            pthread_mutex_unlock(&c.mu);
            if (x && x->type == REDIS_REPLY_INTEGER && x->integer == 0) {
                got[i] = no_answer(w, "its heartbeat stopped before it answered");
                left--;
            }
            if (x)
                freeReplyObject(x);
        }
    }
    rconn_close(&c);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        if (got[i])
            json_array_append_new(out, got[i]);
    free(got);
    return out;
}

json_t *registry_worker_hashes(struct registry *g, int64_t id, struct ev_err *err)
{
    json_t *names = registry_live_workers(g, err);
    if (!names)
        return NULL;
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        redisReply *r =
            cmd(g, err, "HGET " KEY_WORKER_RT_PREFIX "%s %" PRId64, json_string_value(v), id);
        if (!r) {
            json_decref(out);
            json_decref(names);
            return NULL;
        }
        json_array_append_new(
            out, json_pack("{s:s,s:o}", "worker", json_string_value(v), "hash",
                           r->type == REDIS_REPLY_STRING ? json_string(r->str) : json_null()));
        freeReplyObject(r);
    }
    json_decref(names);
    return out;
}

/* ---- A worker's side --------------------------------------------------------------------- */

struct reg_entry {
    int64_t id;
    char *def;
    size_t len;
    char digest[72];
    bool here; /* installed here from this very definition */
};

/* What this sync did to one runtime, for the answers to the changes it covers. */
struct outcome {
    int64_t id;
    const char *status; /* "installed", "deleted", "failed" */
    char hash[72];
    char *message, *out, *errout;
};

struct sync_round {
    struct reg_entry *reg;
    size_t n_reg;
    struct outcome *done;
    size_t n_done;
};

static void round_free(struct sync_round *s)
{
    for (size_t i = 0; i < s->n_reg; i++)
        free(s->reg[i].def);
    for (size_t i = 0; i < s->n_done; i++) {
        free(s->done[i].message);
        free(s->done[i].out);
        free(s->done[i].errout);
    }
    free(s->reg);
    free(s->done);
}

static struct outcome *note(struct sync_round *s, int64_t id, const char *status)
{
    struct outcome *o = realloc(s->done, (s->n_done + 1) * sizeof(*o));
    if (!o)
        return NULL;
    s->done = o;
    o = &s->done[s->n_done++];
    memset(o, 0, sizeof(*o));
    o->id = id;
    o->status = status;
    return o;
}

/* The store's mark that the installation in directory dir was made from the definition whose
 * SHA-256 is digest: a runtime installed again under the same id has a new directory. */
static void mark_key(char *buf, size_t size, int64_t id, const char *dir, const char *digest)
{
    snprintf(buf, size, "registry:%" PRId64 ":%s:%s", id, dir, digest);
}

static bool installed_from(struct pipeline *p, int64_t id, const char *digest)
{
    struct runtime rt;
    bool found = false, marked = false;
    struct ev_err err;
    if (store_get(p->store, id, &rt, &found, &err) < 0 || !found)
        return false;
    char key[200];
    mark_key(key, sizeof(key), id, rt.dir, digest);
    runtime_free(&rt);
    return store_get_flag(p->store, key, &marked, &err) == 0 && marked;
}

static int local_hash(const struct registry *g, struct pipeline *p, int64_t id, char out[72])
{
    struct runtime rt;
    bool found = false;
    struct ev_err err;
    out[0] = '\0';
    if (store_get(p->store, id, &rt, &found, &err) < 0 || !found)
        return -1;
    int rc = runtime_hash(&rt, g->cfg, out);
    runtime_free(&rt);
    return rc;
}

/* The registry's version and epoch ("" and 0 before its first change). */
static int current_version(struct registry *g, long long *version, char epoch[40],
                           struct ev_err *err)
{
    redisReply *v = cmd(g, err, "MGET " KEY_RT_VERSION " " KEY_RT_EPOCH);
    if (!v)
        return -1;
    *version = 0;
    epoch[0] = '\0';
    if (v->type == REDIS_REPLY_ARRAY && v->elements == 2) {
        if (v->element[0]->type == REDIS_REPLY_STRING)
            *version = reply_ll(v->element[0]);
        if (v->element[1]->type == REDIS_REPLY_STRING)
            snprintf(epoch, 40, "%s", v->element[1]->str);
    }
    freeReplyObject(v);
    return 0;
}

/* Whether the worker is in line with this version of the registry. */
static bool applied_is(struct registry *g, long long version, const char *epoch)
{
    pthread_mutex_lock(&g->mu);
    bool same = g->applied == version && strcmp(g->epoch, epoch) == 0;
    pthread_mutex_unlock(&g->mu);
    return same;
}

/* Reads the registry: *version and the entries; -1 when Redis could not be read. */
static int read_registry(struct registry *g, long long *version, char epoch[40],
                         struct sync_round *s, struct ev_err *err)
{
    if (current_version(g, version, epoch, err) < 0)
        return -1;
    redisReply *ids = cmd(g, err, "ZRANGE " KEY_RT_IDS " 0 -1");
    if (!ids)
        return -1;
    s->reg = ids->elements ? calloc(ids->elements, sizeof(*s->reg)) : NULL;
    for (size_t i = 0; s->reg && i < ids->elements; i++) {
        redisReply *h = cmd(g, err, "HMGET " KEY_RT_PREFIX "%s def digest", ids->element[i]->str);
        if (!h) {
            freeReplyObject(ids);
            return -1;
        }
        if (h->type == REDIS_REPLY_ARRAY && h->elements == 2 &&
            h->element[0]->type == REDIS_REPLY_STRING &&
            h->element[1]->type == REDIS_REPLY_STRING) {
            struct reg_entry *e = &s->reg[s->n_reg];
            e->def = malloc(h->element[0]->len + 1);
            if (e->def) {
                memcpy(e->def, h->element[0]->str, h->element[0]->len + 1);
                e->len = h->element[0]->len;
                e->id = reply_ll(ids->element[i]);
                snprintf(e->digest, sizeof(e->digest), "%s", h->element[1]->str);
                s->n_reg++;
            }
        }
        freeReplyObject(h);
    }
    bool short_of_memory = ids->elements && !s->reg;
    freeReplyObject(ids);
    return short_of_memory ? ev_fail(err, ENOMEM, "read the registry") : 0;
}

static struct reg_entry *find_entry(struct sync_round *s, int64_t id)
{
    for (size_t i = 0; i < s->n_reg; i++)
        if (s->reg[i].id == id)
            return &s->reg[i];
    return NULL;
}

static void remove_local(struct registry *g, struct sync_round *s, int64_t id, const char *why)
{
    struct ev_err err = {0};
    enum pipe_status st = g->stop && atomic_load(g->stop)
                              ? PIPE_STOPPING
                              : pipeline_delete(g->p, id, NULL, NULL, &err);
    struct outcome *o = note(s, id, st == PIPE_OK || st == PIPE_NO_RUNTIME ? "deleted" : "failed");
    if (o && strcmp(o->status, "failed") == 0 &&
        asprintf(&o->message, "the worker could not delete it (%s)",
                 err.msg[0] ? err.msg : "shutting down") < 0)
        o->message = NULL;
    fprintf(stderr, "envicutor: worker: runtime %" PRId64 " %s (%s)\n", id,
            st == PIPE_OK ? "removed" : "not removed", why);
}

static void install(struct registry *g, struct sync_round *s, struct reg_entry *e)
{
    struct runtime rt;
    struct ev_err err = {0};
    struct outcome *o = note(s, e->id, "failed");
    if (!o)
        return;
    if (parse_runtime(e->def, e->len, nix_available(), &rt, &err) < 0) {
        o->message = strdup(err.msg);
        return;
    }
    if (parse_runtime_options(e->def, e->len, &g->cfg->compile, &g->cfg->run, &rt, &err) < 0) {
        o->message = strdup(err.msg);
        runtime_free(&rt);
        return;
    }
    rt.id = e->id;
    enum pipe_status st = pipeline_install(g->p, &rt, NULL, NULL, &o->out, &o->errout, &err);
    if (st == PIPE_OK) {
        char key[200];
        mark_key(key, sizeof(key), rt.id, rt.dir, e->digest);
        if (store_set_flag(g->p->store, key, &err) < 0)
            fprintf(stderr, "envicutor: worker: runtime %" PRId64 ": %s\n", rt.id, err.msg);
        e->here = true;
        o->status = "installed";
        runtime_hash(&rt, g->cfg, o->hash);
    } else {
        o->message = strdup(st == PIPE_SETUP_FAILED ? "the set-up failed on this worker"
                            : st == PIPE_NAME_TAKEN ? "a runtime of this worker has this name"
                            : st == PIPE_ID_TAKEN   ? "a runtime of this worker has this id"
                            : err.msg[0]            ? err.msg
                                                    : "the worker is shutting down");
    }
    fprintf(stderr, "envicutor: worker: runtime %" PRId64 " \"%.80s\" %s\n", e->id, rt.name,
            st == PIPE_OK ? "installed from the registry" : "could not be installed");
    runtime_free(&rt);
}

/* Publishes this worker's hash of each runtime it has from the registry; the first hash of a
 * runtime becomes the registry's (HSETNX), written only while the runtime is still there. */
static void publish(struct registry *g, struct sync_round *s)
{
    struct ev_err err;
    redisReply *r = cmd(g, &err, "DEL " KEY_WORKER_RT_PREFIX "%s", g->worker);
    if (r)
        freeReplyObject(r);
    for (size_t i = 0; i < s->n_reg; i++) {
        char h[72];
        if (!s->reg[i].here || local_hash(g, g->p, s->reg[i].id, h) < 0)
            continue;
        r = cmd(g, &err, "HSET " KEY_WORKER_RT_PREFIX "%s %" PRId64 " %s", g->worker, s->reg[i].id,
                h);
        if (r)
            freeReplyObject(r);
        r = cmd(g, &err, "EVAL %s 1 " KEY_RT_PREFIX "%" PRId64 " %s",
                "if redis.call('EXISTS', KEYS[1]) == 1 then "
                "return redis.call('HSETNX', KEYS[1], 'hash', ARGV[1]) end return 0",
                s->reg[i].id, h);
        if (r)
            freeReplyObject(r);
    }
    r = cmd(g, &err, "PEXPIRE " KEY_WORKER_RT_PREFIX "%s %" PRIu64, g->worker,
            g->cfg->job_reclaim_seconds * 1000);
    if (r)
        freeReplyObject(r);
}

/* The answer to change u ("add <id>" / "del <id>"): what this round did to the runtime, else
 * its state here. */
static void answer_change(struct registry *g, struct sync_round *s, long long u)
{
    struct ev_err err;
    redisReply *c = cmd(g, &err, "GET " KEY_RT_CHANGE_PREFIX "%lld", u);
    char op[8];
    long long id;
    if (!c || c->type != REDIS_REPLY_STRING || sscanf(c->str, "%7s %lld", op, &id) != 2) {
        if (c)
            freeReplyObject(c);
        return;
    }
    freeReplyObject(c);
    bool add = strcmp(op, "add") == 0;
    const struct outcome *o = NULL;
    for (size_t i = s->n_done; i-- > 0;)
        if (s->done[i].id == id &&
            (strcmp(s->done[i].status, "failed") == 0 ||
             strcmp(s->done[i].status, add ? "installed" : "deleted") == 0)) {
            o = &s->done[i];
            break;
        }
    json_t *a = json_pack("{s:s}", "worker", g->worker);
    char h[72];
    if (o) {
        json_object_set_new(a, "status", json_string(o->status));
        if (o->hash[0])
            json_object_set_new(a, "hash", json_string(o->hash));
        if (o->message)
            json_object_set_new(a, "message", json_string(o->message));
        if (o->out)
            json_object_set_new(a, "stdout", json_string(o->out));
        if (o->errout)
            json_object_set_new(a, "stderr", json_string(o->errout));
    } else if (add) {
        struct reg_entry *e = find_entry(s, id);
        if (e && e->here && local_hash(g, g->p, id, h) == 0) {
            json_object_set_new(a, "status", json_string("installed"));
            json_object_set_new(a, "hash", json_string(h));
        } else {
            json_object_set_new(a, "status", json_string("failed"));
            json_object_set_new(a, "message",
                                json_string("deleted from the registry before it was installed"));
        }
    } else {
        json_object_set_new(a, "status",
                            json_string(local_hash(g, g->p, id, h) < 0 ? "deleted" : "failed"));
    }
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    if (!text)
        return;
    redisReply *r = cmd(g, &err, "RPUSH " KEY_RT_ACKS_PREFIX "%lld %s", u, text);
    if (r)
        freeReplyObject(r);
    r = cmd(g, &err, "EXPIRE " KEY_RT_ACKS_PREFIX "%lld %d", u, ACKS_TTL);
    if (r)
        freeReplyObject(r);
    free(text);
}

/* One round: the worker's runtimes made the registry's. */
static int sync_once(struct registry *g, struct ev_err *err)
{
    struct sync_round s = {0};
    long long version;
    char epoch[40];
    if (read_registry(g, &version, epoch, &s, err) < 0) {
        round_free(&s);
        return -1;
    }
    struct runtime_summary *local = NULL;
    size_t n_local = 0;
    if (store_list(g->p->store, &local, &n_local, err) < 0) {
        round_free(&s);
        return -1;
    }
    for (size_t i = 0; i < n_local; i++) {
        struct reg_entry *e = find_entry(&s, local[i].id);
        if (e && installed_from(g->p, e->id, e->digest))
            e->here = true;
        else if (e)
            remove_local(g, &s, local[i].id, "replaced by the registry's definition");
        else if (version > 0)
            /* Only once a registry exists: a Redis that has never had one, or lost its data,
             * does not empty the workers' runtimes (docs/cluster.md). */
            remove_local(g, &s, local[i].id, "not in the registry");
    }
    store_list_free(local, n_local);
    for (size_t i = 0; i < s.n_reg; i++)
        if (!s.reg[i].here && !(g->stop && atomic_load(g->stop)))
            install(g, &s, &s.reg[i]);
    publish(g, &s);
    pthread_mutex_lock(&g->mu);
    long long before = g->applied;
    /* a registry made anew (Redis lost its data): its every change is new to this worker */
    if (before >= 0 && strcmp(g->epoch, epoch) != 0)
        before = 0;
    pthread_mutex_unlock(&g->mu);
    /* the first round answers nothing: the worker had no heartbeat, so no API node waits for
     * it */
    for (long long u = before + 1; before >= 0 && u <= version; u++)
        answer_change(g, &s, u);
    pthread_mutex_lock(&g->mu);
    g->applied = version;
    snprintf(g->epoch, sizeof(g->epoch), "%s", epoch);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    round_free(&s);
    return 0;
}

static void *watch_main(void *arg)
{
    struct registry *g = arg;
    while (!atomic_load(g->stop)) {
        sleep_ms(WATCH_MS);
        struct ev_err err;
        long long v;
        char epoch[40];
        if (current_version(g, &v, epoch, &err) < 0 || applied_is(g, v, epoch))
            continue;
        if (sync_once(g, &err) < 0)
            fprintf(stderr, "envicutor: worker: runtime registry: %s\n", err.msg);
    }
    return NULL;
}

int registry_sync_start(struct registry *g, struct pipeline *p, atomic_bool *stop,
                        struct ev_err *err)
{
    g->p = p;
    g->stop = stop;
    while (sync_once(g, err) < 0) {
        fprintf(stderr, "envicutor: worker: runtime registry: %s\n", err->msg);
        if (atomic_load(stop))
            return -1;
        sleep_ms(1000);
    }
    int e = pthread_create(&g->th, NULL, watch_main, g);
    if (e)
        return ev_fail(err, e, "start the runtime registry's thread");
    g->started = true;
    return 0;
}

void registry_sync_stop(struct registry *g)
{
    if (g->started)
        pthread_join(g->th, NULL);
    g->started = false;
}

long long registry_applied(struct registry *g)
{
    pthread_mutex_lock(&g->mu);
    long long v = g->applied;
    pthread_mutex_unlock(&g->mu);
    return v;
}

static int registry_hash(struct registry *g, int64_t id, bool *exists, char hash[72],
                         struct ev_err *err)
{
    redisReply *r = cmd(g, err, "HMGET " KEY_RT_PREFIX "%" PRId64 " def hash", id);
    if (!r)
        return -1;
    *exists = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[0]->type == REDIS_REPLY_STRING;
    hash[0] = '\0';
    if (*exists && r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(hash, 72, "%s", r->element[1]->str);
    freeReplyObject(r);
    return 0;
}

enum registry_check registry_check(struct registry *g, struct pipeline *p, int64_t id,
                                   struct ev_err *err)
{
    for (int round = 0;; round++) {
        bool exists;
        char want[72], have[72];
        if (registry_hash(g, id, &exists, want, err) < 0)
            return REGISTRY_FAILED;
        if (!exists)
            return REGISTRY_UNKNOWN;
        if (want[0] && local_hash(g, p, id, have) == 0 && strcmp(want, have) == 0)
            return REGISTRY_RUNS_HERE;
        long long v;
        char epoch[40];
        if (round > 0 || current_version(g, &v, epoch, err) < 0 || applied_is(g, v, epoch))
            return REGISTRY_ELSEWHERE;
        /* a change this worker is still carrying out (the job came before its install was
         * done): decided once it is */
        uint64_t deadline = monotonic_ns() + (g->cfg->installation_timeout + 60) * 1000000000ull;
        pthread_mutex_lock(&g->mu);
        while (!(g->applied >= v && strcmp(g->epoch, epoch) == 0) && monotonic_ns() < deadline &&
               !atomic_load(g->stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        }
        pthread_mutex_unlock(&g->mu);
    }
}

bool registry_elsewhere(struct registry *g, int64_t id)
{
    struct ev_err err;
    bool exists;
    char want[72];
    if (registry_hash(g, id, &exists, want, &err) < 0 || !exists || !want[0])
        return false;
    json_t *names = registry_live_workers(g, &err);
    bool found = false;
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        const char *w = json_string_value(v);
        if (found || strcmp(w, g->worker) == 0)
            continue;
        redisReply *r = cmd(g, &err, "HGET " KEY_WORKER_RT_PREFIX "%s %" PRId64, w, id);
        found = r && r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0;
        if (r)
            freeReplyObject(r);
    }
    json_decref(names);
    return found;
}
