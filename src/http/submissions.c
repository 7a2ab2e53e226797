#include "http/submissions.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/metrics.h"
#include "http/callback.h"

/* A callback waiting for its next attempt. */
struct cb_item {
    char token[TOKEN_LEN + 1];
    struct http_url url;
    unsigned tries; /* attempts made */
    uint64_t due_ns;
    struct cb_item *next;
};

/* Tries in all, and the wait before each retry: 1, 2, 4, 8 seconds. */
#define CALLBACK_TRIES 5
#define CALLBACK_FIRST_WAIT_MS 1000
/* One attempt, from connect to the answer's status line. */
#define CALLBACK_TIMEOUT_MS 10000
/* Deliveries at once: a slow target holds one of these, never a submission's slot. */
#define CALLBACK_WORKERS 2

struct async_metrics {
    metrics_counter accepted, finished, restarted;
    metrics_counter cb_delivered, cb_failed, cb_attempts_failed;
};
static struct async_metrics am;

struct submissions {
    const struct ev_config *cfg;
    struct sub_runner *runner;
    pthread_mutex_t mu; /* the database and used */
    sqlite3 *db;
    int dir_fd;    /* DATA_DIR/results */
    uint64_t used; /* bytes of the result documents kept */
    uint64_t kept; /* their number */

    pthread_mutex_t cb_mu;
    pthread_cond_t cb_cv;    /* on CLOCK_MONOTONIC */
    struct cb_item *cb_head; /* by due time */
    atomic_bool stopping;
    pthread_t threads[CALLBACK_WORKERS + 1]; /* the workers, then the sweep */
    unsigned n_threads;
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS submissions ("
    " token TEXT PRIMARY KEY,"
    " state INTEGER NOT NULL,"          /* enum sub_state */
    " created INTEGER NOT NULL,"        /* Unix seconds */
    " expires INTEGER,"                 /* Unix seconds, once done */
    " size INTEGER NOT NULL DEFAULT 0," /* bytes of the result document */
    " callback_url TEXT,"               /* or NULL */
    " callback_pending INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS submissions_expiry ON submissions(state, expires);";

static int sql_exec(struct submissions *s, const char *sql, struct ev_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        ev_fail(err, 0, "submissions database: %s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* One statement with text and integer parameters ("t" and "i" in types, in order); for each
 * row, row(ctx, stmt). 0 or -1 with err. */
static int sql_run(struct submissions *s, const char *sql, const char *types,
                   const void *const *args, void (*row)(void *ctx, sqlite3_stmt *st), void *ctx,
                   struct ev_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return ev_fail(err, 0, "submissions database: %s", sqlite3_errmsg(s->db));
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't')
            sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(st, i + 1, *(const int64_t *)args[i]);
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (row)
            row(ctx, st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return ev_fail(err, 0, "submissions database: %s", sqlite3_errmsg(s->db));
    return 0;
}

static void log_err(const char *what, const char *token, const struct ev_err *err)
{
    fprintf(stderr, "envicutor: async %.32s: %s: %s\n", token ? token : "-", what, err->msg);
}

/* ---- result documents ------------------------------------------------------------------- */

static void result_name(const char *token, const char *ext, char *buf, size_t size)
{
    snprintf(buf, size, "%s.%s", token, ext);
}

/* {"token", "status": "done", "result_status", "result"} written to its file (through a
 * temporary name, so that a reader never sees half of one): its size, or -1. */
static int64_t write_result(struct submissions *s, const char *token, int status, json_t *answer,
                            struct ev_err *err)
{
    json_t *doc = json_pack("{s:s, s:s, s:i, s:O}", "token", token, "status", "done",
                            "result_status", status, "result", answer ? answer : json_null());
    if (!doc)
        return ev_fail(err, ENOMEM, "build the result document");
    char tmp[64], name[64];
    result_name(token, "tmp", tmp, sizeof(tmp));
    result_name(token, "json", name, sizeof(name));
    int fd = openat(s->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        json_decref(doc);
        return ev_fail(err, errno, "create results/%s", tmp);
    }
    int rc = json_dumpfd(doc, fd, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(doc);
    struct stat sb;
    if (rc < 0 || fstat(fd, &sb) < 0) {
        ev_fail(err, errno, "write results/%s", tmp);
        close(fd);
        unlinkat(s->dir_fd, tmp, 0);
        return -1;
    }
    close(fd);
    if (renameat(s->dir_fd, tmp, s->dir_fd, name) < 0) {
        ev_fail(err, errno, "rename results/%s", tmp);
        unlinkat(s->dir_fd, tmp, 0);
        return -1;
    }
    return (int64_t)sb.st_size;
}

static void remove_result(struct submissions *s, const char *token)
{
    char name[64];
    result_name(token, "json", name, sizeof(name));
    if (unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
        fprintf(stderr, "envicutor: async: remove results/%s: %s\n", name, strerror(errno));
}

/* ---- callbacks -------------------------------------------------------------------------- */

static void cb_insert(struct submissions *s, struct cb_item *c)
{
    struct cb_item **p = &s->cb_head;
    while (*p && (*p)->due_ns <= c->due_ns)
        p = &(*p)->next;
    c->next = *p;
    *p = c;
    pthread_cond_signal(&s->cb_cv);
}

static void cb_queue(struct submissions *s, const char *token, const char *url)
{
    struct cb_item *c = calloc(1, sizeof(*c));
    struct ev_err err;
    if (!c || url_parse_http(url, &c->url, &err) < 0) {
        /* accepted when it was stored; only memory can fail here */
        fprintf(stderr, "envicutor: async %.32s: the callback was not queued\n", token);
        free(c);
        return;
    }
    snprintf(c->token, sizeof(c->token), "%s", token);
    c->due_ns = monotonic_ns();
    pthread_mutex_lock(&s->cb_mu);
    cb_insert(s, c);
    pthread_mutex_unlock(&s->cb_mu);
}

static void cb_settle(struct submissions *s, const char *token)
{
    struct ev_err err;
    const void *args[] = {token};
    pthread_mutex_lock(&s->mu);
    if (sql_run(s, "UPDATE submissions SET callback_pending = 0 WHERE token = ?", "t", args, NULL,
                NULL, &err) < 0)
        log_err("settle its callback", token, &err);
    pthread_mutex_unlock(&s->mu);
}

/* One attempt: 1 delivered (a 2xx answer), 0 to try again, -1 when it can never be (the
 * result is gone). */
static int cb_attempt(struct submissions *s, struct cb_item *c)
{
    char name[64];
    result_name(c->token, "json", name, sizeof(name));
    int fd = openat(s->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat sb;
    struct ev_err err;
    int status = 0, rc = -1;
    if (fstat(fd, &sb) < 0)
        ev_fail(&err, errno, "fstat");
    else
        rc = callback_post(&c->url, c->token, fd, (uint64_t)sb.st_size,
                           s->cfg->callback_allow_private, CALLBACK_TIMEOUT_MS, &s->stopping,
                           &status, &err);
    close(fd);
    if (rc == 0 && status >= 200 && status < 300)
        return 1;
    if (rc == 0)
        ev_fail(&err, 0, "answered %d", status);
    if (!atomic_load(&s->stopping))
        fprintf(stderr, "envicutor: async %.32s: callback to %s:%s, try %u of %d: %s\n", c->token,
                c->url.host, c->url.port, c->tries + 1, CALLBACK_TRIES, err.msg);
    return 0;
}

static void *cb_worker(void *arg)
{
    struct submissions *s = arg;
    pthread_mutex_lock(&s->cb_mu);
    while (!atomic_load(&s->stopping)) {
        struct cb_item *c = s->cb_head;
        uint64_t now = monotonic_ns();
        if (!c || c->due_ns > now) {
            if (!c) {
                pthread_cond_wait(&s->cb_cv, &s->cb_mu);
            } else {
                uint64_t ms = (c->due_ns - now) / 1000000 + 1;
                struct timespec ts = monotonic_after_ms(ms > 1000 ? 1000 : (unsigned)ms);
                pthread_cond_timedwait(&s->cb_cv, &s->cb_mu, &ts);
            }
            continue;
        }
        s->cb_head = c->next;
        pthread_mutex_unlock(&s->cb_mu);
        int r = cb_attempt(s, c);
        c->tries++;
        bool stopping = atomic_load(&s->stopping);
        if (r == 1)
            counter_add(&am.cb_delivered, 1);
        else if (!stopping)
            counter_add(&am.cb_attempts_failed, 1);
        if (r != 0 || (c->tries >= CALLBACK_TRIES && !stopping)) {
            if (r == 0) {
                counter_add(&am.cb_failed, 1);
                fprintf(stderr, "envicutor: async %.32s: callback given up after %d tries\n",
                        c->token, CALLBACK_TRIES);
            }
            cb_settle(s, c->token);
            free(c);
            pthread_mutex_lock(&s->cb_mu);
            continue;
        }
        if (stopping) {
            /* left pending in the database: delivered again at the next start */
            free(c);
            pthread_mutex_lock(&s->cb_mu);
            continue;
        }
        c->due_ns = monotonic_ns() + ((uint64_t)CALLBACK_FIRST_WAIT_MS * 1000000 << (c->tries - 1));
        pthread_mutex_lock(&s->cb_mu);
        cb_insert(s, c);
    }
    pthread_mutex_unlock(&s->cb_mu);
    return NULL;
}

/* ---- expiry ----------------------------------------------------------------------------- */

struct expired {
    char (*tokens)[TOKEN_LEN + 1];
    int64_t *sizes;
    size_t n, cap;
};

static void collect_expired(void *ctx, sqlite3_stmt *st)
{
    struct expired *e = ctx;
    const char *t = (const char *)sqlite3_column_text(st, 0);
    if (e->n < e->cap && token_valid(t)) {
        snprintf(e->tokens[e->n], TOKEN_LEN + 1, "%s", t);
        e->sizes[e->n++] = sqlite3_column_int64(st, 1);
    }
}

#define SWEEP_BATCH 256

/* Removes results past their time, a batch at a time; a result whose callback is still being
 * delivered stays until the delivery ends (GET already answers 404 for it). Returns whether a
 * whole batch was found (more may wait). */
static bool sweep(struct submissions *s)
{
    char tokens[SWEEP_BATCH][TOKEN_LEN + 1];
    int64_t sizes[SWEEP_BATCH];
    struct expired e = {tokens, sizes, 0, SWEEP_BATCH};
    int64_t now = now_s(), batch = SWEEP_BATCH;
    const void *args[] = {&now, &batch};
    struct ev_err err;
    pthread_mutex_lock(&s->mu);
    if (sql_run(s,
                "SELECT token, size FROM submissions WHERE state = 2 AND expires <= ? AND "
                "callback_pending = 0 LIMIT ?",
                "ii", args, collect_expired, &e, &err) < 0)
        log_err("sweep", NULL, &err);
    for (size_t i = 0; i < e.n; i++) {
        const void *a[] = {tokens[i]};
        if (sql_run(s, "DELETE FROM submissions WHERE token = ?", "t", a, NULL, NULL, &err) < 0) {
            log_err("remove", tokens[i], &err);
            continue;
        }
        remove_result(s, tokens[i]);
        s->used -= (uint64_t)sizes[i] <= s->used ? (uint64_t)sizes[i] : s->used;
        s->kept -= s->kept > 0;
    }
    pthread_mutex_unlock(&s->mu);
    return e.n == SWEEP_BATCH;
}

static void *sweep_main(void *arg)
{
    struct submissions *s = arg;
    pthread_mutex_lock(&s->cb_mu);
    while (!atomic_load(&s->stopping)) {
        pthread_mutex_unlock(&s->cb_mu);
        bool more = sweep(s);
        pthread_mutex_lock(&s->cb_mu);
        if (!more && !atomic_load(&s->stopping)) {
            struct timespec ts = monotonic_after_ms(1000);
            pthread_cond_timedwait(&s->cb_cv, &s->cb_mu, &ts);
        }
    }
    pthread_mutex_unlock(&s->cb_mu);
    return NULL;
}

/* ---- opening, and what a restart finds -------------------------------------------------- */

static void sum_kept(void *ctx, sqlite3_stmt *st)
{
    struct submissions *s = ctx;
    s->kept = (uint64_t)sqlite3_column_int64(st, 0);
    s->used = (uint64_t)sqlite3_column_int64(st, 1);
}

struct token_list {
    char (*tokens)[TOKEN_LEN + 1];
    char **urls;
    size_t n, cap;
};

static void collect_token(void *ctx, sqlite3_stmt *st)
{
    struct token_list *l = ctx;
    const char *t = (const char *)sqlite3_column_text(st, 0);
    if (!token_valid(t))
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *nt = realloc(l->tokens, cap * sizeof(*l->tokens));
        if (nt)
            l->tokens = nt;
        void *nu = realloc(l->urls, cap * sizeof(*l->urls));
        if (nu)
            l->urls = nu;
        if (!nt || !nu)
            return;
        l->cap = cap;
    }
    snprintf(l->tokens[l->n], TOKEN_LEN + 1, "%s", t);
    const char *u = (const char *)sqlite3_column_text(st, 1);
    l->urls[l->n++] = u ? strdup(u) : NULL;
}

static void token_list_free(struct token_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->urls[i]);
    free(l->urls);
    free(l->tokens);
}

/* What was queued or running when the server stopped did not finish, and its request is gone
 * (bodies are not kept on disk): it is done, with an answer that says so. */
static int recover(struct submissions *s, struct ev_err *err)
{
    struct token_list l = {0};
    if (sql_run(s, "SELECT token, callback_url FROM submissions WHERE state < 2", "", NULL,
                collect_token, &l, err) < 0)
        return -1;
    json_t *msg = json_pack("{s:s}", "message",
                            "The server restarted before this submission finished; submit it "
                            "again");
    for (size_t i = 0; msg && i < l.n; i++) {
        subs_finished(s, l.tokens[i], 503, msg);
        counter_add(&am.restarted, 1);
    }
    json_decref(msg);
    if (l.n)
        fprintf(stderr, "envicutor: async: %zu submissions did not finish before the restart\n",
                l.n);
    token_list_free(&l);
    return 0;
}

struct submissions *subs_open(const struct ev_config *cfg, struct ev_err *err)
{
    struct submissions *s = calloc(1, sizeof(*s));
    if (!s) {
        ev_fail(err, ENOMEM, "submissions");
        return NULL;
    }
    s->cfg = cfg;
    s->dir_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cb_mu, NULL);
    int e = cond_init_monotonic(&s->cb_cv);
    if (e) {
        ev_fail(err, e, "pthread_cond_init");
        free(s);
        return NULL;
    }
    char path[300];
    snprintf(path, sizeof(path), "%s/results", cfg->data_dir);
    if (make_dir(path, 0700, err) < 0)
        goto fail;
    s->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s->dir_fd < 0) {
        ev_fail(err, errno, "open %s", path);
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/submissions.db", cfg->data_dir);
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        ev_fail(err, 0, "open the database %s: %s", path,
                s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* synchronous=NORMAL: a crash of the machine may lose the last few state changes (a
     * submission then reads as it was a moment before, or as unknown), never corrupt them. */
    struct token_list l = {0};
    /* the callbacks still owed, before recover adds those of the submissions it finishes */
    if (sql_exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err) < 0 ||
        sql_exec(s, schema, err) < 0 ||
        sql_run(s, "SELECT count(*), coalesce(sum(size), 0) FROM submissions WHERE state = 2", "",
                NULL, sum_kept, s, err) < 0 ||
        sql_run(s,
                "SELECT token, callback_url FROM submissions WHERE state = 2 AND "
                "callback_pending = 1",
                "", NULL, collect_token, &l, err) < 0 ||
        recover(s, err) < 0) {
        token_list_free(&l);
        ev_wrap(err, "%s: ", path);
        goto fail;
    }
    for (size_t i = 0; i < l.n; i++)
        if (l.urls[i])
            cb_queue(s, l.tokens[i], l.urls[i]);
    token_list_free(&l);
    return s;
fail:
    subs_close(s);
    return NULL;
}

int subs_start(struct submissions *s, struct ev_err *err)
{
    for (unsigned i = 0; i < CALLBACK_WORKERS + 1; i++) {
        int e =
            pthread_create(&s->threads[i], NULL, i < CALLBACK_WORKERS ? cb_worker : sweep_main, s);
        if (e)
            return ev_fail(err, e, "start the async submissions' threads");
        s->n_threads++;
    }
    return 0;
}

void subs_stop(struct submissions *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->cb_mu);
    atomic_store(&s->stopping, true);
    pthread_cond_broadcast(&s->cb_cv);
    pthread_mutex_unlock(&s->cb_mu);
    for (unsigned i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    s->n_threads = 0;
}

void subs_close(struct submissions *s)
{
    if (!s)
        return;
    subs_stop(s);
    while (s->cb_head) {
        struct cb_item *c = s->cb_head;
        s->cb_head = c->next;
        free(c);
    }
    if (s->db)
        sqlite3_close(s->db);
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    pthread_cond_destroy(&s->cb_cv);
    pthread_mutex_destroy(&s->cb_mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

struct sub_runner *subs_runner(struct submissions *s)
{
    return s ? s->runner : NULL;
}

void subs_set_runner(struct submissions *s, struct sub_runner *r)
{
    s->runner = r;
}

/* ---- the submissions' lives ------------------------------------------------------------- */

int subs_create(struct submissions *s, const char *callback_url, char *token, struct ev_err *err)
{
    if (token_make(token, err) < 0)
        return -1;
    int64_t now = now_s();
    const void *args[] = {token, &now, callback_url};
    pthread_mutex_lock(&s->mu);
    int rc;
    if (s->used >= s->cfg->result_store_bytes)
        rc = 1;
    else if (callback_url)
        rc = sql_run(s,
                     "INSERT INTO submissions (token, state, created, callback_url, "
                     "callback_pending) VALUES (?, 0, ?, ?, 1)",
                     "tit", args, NULL, NULL, err);
    else
        rc = sql_run(s, "INSERT INTO submissions (token, state, created) VALUES (?, 0, ?)", "ti",
                     args, NULL, NULL, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void subs_accepted(struct submissions *s)
{
    (void)s;
    counter_add(&am.accepted, 1);
}

void subs_discard(struct submissions *s, const char *token)
{
    struct ev_err err;
    const void *args[] = {token};
    pthread_mutex_lock(&s->mu);
    if (sql_run(s, "DELETE FROM submissions WHERE token = ?", "t", args, NULL, NULL, &err) < 0)
        log_err("discard", token, &err);
    pthread_mutex_unlock(&s->mu);
}

void subs_running(struct submissions *s, const char *token)
{
    struct ev_err err;
    const void *args[] = {token};
    pthread_mutex_lock(&s->mu);
    if (sql_run(s, "UPDATE submissions SET state = 1 WHERE token = ? AND state = 0", "t", args,
                NULL, NULL, &err) < 0)
        log_err("mark running", token, &err);
    pthread_mutex_unlock(&s->mu);
}

static void get_url(void *ctx, sqlite3_stmt *st)
{
    char **url = ctx;
    const char *u = (const char *)sqlite3_column_text(st, 0);
    if (u && sqlite3_column_int64(st, 1))
        *url = strdup(u);
}

void subs_finished(struct submissions *s, const char *token, int status, json_t *answer)
{
    struct ev_err err;
    /* written before the row says done, so that a done row always has its document */
    int64_t size = write_result(s, token, status, answer, &err);
    if (size < 0) {
        log_err("store the result", token, &err);
        json_t *m = json_pack("{s:s}", "message", "Internal server error");
        size = m ? write_result(s, token, 500, m, &err) : -1;
        json_decref(m);
        if (size < 0) {
            log_err("store the result", token, &err);
            return;
        }
    }
    int64_t expires = now_s() + (int64_t)s->cfg->result_ttl;
    const void *args[] = {&expires, &size, token};
    char *url = NULL;
    pthread_mutex_lock(&s->mu);
    if (sql_run(s, "UPDATE submissions SET state = 2, expires = ?, size = ? WHERE token = ?", "iit",
                args, NULL, NULL, &err) < 0 ||
        sql_run(s, "SELECT callback_url, callback_pending FROM submissions WHERE token = ?", "t",
                args + 2, get_url, &url, &err) < 0) {
        log_err("mark done", token, &err);
    } else {
        s->used += (uint64_t)size;
        s->kept++;
    }
    pthread_mutex_unlock(&s->mu);
    counter_add(&am.finished, 1);
    if (url)
        cb_queue(s, token, url);
    free(url);
}

struct lookup {
    bool found;
    int state;
    int64_t expires;
};

static void get_state(void *ctx, sqlite3_stmt *st)
{
    struct lookup *l = ctx;
    l->found = true;
    l->state = sqlite3_column_int(st, 0);
    l->expires = sqlite3_column_int64(st, 1);
}

int subs_lookup(struct submissions *s, const char *token, enum sub_state *st, int *fd,
                uint64_t *size, struct ev_err *err)
{
    if (!token_valid(token))
        return 1;
    struct lookup l = {0};
    const void *args[] = {token};
    pthread_mutex_lock(&s->mu);
    int rc = sql_run(s, "SELECT state, expires FROM submissions WHERE token = ?", "t", args,
                     get_state, &l, err);
    if (rc == 0 && l.found && l.state == SUB_DONE) {
        char name[64];
        result_name(token, "json", name, sizeof(name));
        *fd = openat(s->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat sb;
        if (*fd < 0 || fstat(*fd, &sb) < 0) {
            rc = ev_fail(err, errno, "open results/%s", name);
            if (*fd >= 0)
                close(*fd);
        } else {
            *size = (uint64_t)sb.st_size;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return -1;
    /* Past its time is gone for the client, whether or not the sweep has come by. */
    if (!l.found || (l.state == SUB_DONE && l.expires <= now_s())) {
        if (l.found && l.state == SUB_DONE)
            close(*fd);
        return 1;
    }
    *st = (enum sub_state)l.state;
    return 0;
}

int subs_check_callback(const struct submissions *s, const char *url, struct ev_err *err)
{
    struct http_url u;
    if (url_parse_http(url, &u, err) < 0)
        return -1;
    if (s->cfg->callback_allow_private)
        return 0;
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    bool addr = false, pub = true;
    if (inet_pton(AF_INET, u.host, &a4.sin_addr) == 1) {
        addr = true;
        pub = addr_is_public((struct sockaddr *)&a4);
    } else if (inet_pton(AF_INET6, u.host, &a6.sin6_addr) == 1) {
        addr = true;
        pub = addr_is_public((struct sockaddr *)&a6);
    }
    if (addr && !pub)
        return ev_fail(err, 0,
                       "callback_url: %s is a loopback, private or reserved address, which "
                       "callbacks may not reach on this server (CALLBACK_ALLOW_PRIVATE)",
                       u.host);
    if (!addr && strcasecmp(u.host, "localhost") == 0)
        return ev_fail(err, 0,
                       "callback_url: localhost is a loopback address, which callbacks may not "
                       "reach on this server (CALLBACK_ALLOW_PRIVATE)");
    return 0;
}

void subs_metrics(FILE *f, struct submissions *s)
{
    metrics_family(f, "envicutor_async_submissions_total", "counter",
                   "Asynchronous submissions accepted (POST /submissions answered 201)");
    metrics_sample(f, "envicutor_async_submissions_total", "", counter_get(&am.accepted));
    metrics_family(f, "envicutor_async_finished_total", "counter",
                   "Asynchronous submissions done (restarted: marked done by a restart)");
    metrics_sample(f, "envicutor_async_finished_total", "", counter_get(&am.finished));
    metrics_sample(f, "envicutor_async_finished_total", "how=\"restarted\"",
                   counter_get(&am.restarted));
    metrics_family(f, "envicutor_async_callbacks_total", "counter",
                   "Callbacks delivered, given up after every try, and failed attempts");
    metrics_sample(f, "envicutor_async_callbacks_total", "outcome=\"delivered\"",
                   counter_get(&am.cb_delivered));
    metrics_sample(f, "envicutor_async_callbacks_total", "outcome=\"given_up\"",
                   counter_get(&am.cb_failed));
    metrics_sample(f, "envicutor_async_callbacks_total", "outcome=\"attempt_failed\"",
                   counter_get(&am.cb_attempts_failed));
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    uint64_t used = s->used, kept = s->kept;
    pthread_mutex_unlock(&s->mu);
    metrics_family(f, "envicutor_async_results_bytes", "gauge",
                   "Bytes of asynchronous results kept (bounded by RESULT_STORE_SIZE)");
    metrics_sample(f, "envicutor_async_results_bytes", "", used);
    metrics_family(f, "envicutor_async_results", "gauge", "Asynchronous results kept");
    metrics_sample(f, "envicutor_async_results", "", kept);
}
