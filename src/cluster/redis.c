#include "cluster/redis.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/fileutil.h"

#define CONNECT_TIMEOUT_MS 1000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

void rconn_init(struct rconn *r, const struct redis_addr *a, unsigned timeout_ms)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    r->addr = *a;
    r->timeout_ms = timeout_ms;
}

void rconn_close(struct rconn *r)
{
    if (r->c)
        redisFree(r->c);
    r->c = NULL;
    pthread_mutex_destroy(&r->mu);
}

void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void broke(struct rconn *r, const char *why)
{
    snprintf(r->why, sizeof(r->why), "%s", why);
    if (r->c)
        redisFree(r->c);
    r->c = NULL;
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (r->backoff_ms > BACKOFF_MAX_MS)
        r->backoff_ms = BACKOFF_MAX_MS;
    r->retry_at_ns = monotonic_ns() + (uint64_t)r->backoff_ms * 1000000ull;
}

static int unreachable(struct rconn *r, struct ev_err *err)
{
    return ev_fail(err, 0, "Redis at %s:%u is unreachable: %s", r->addr.host, r->addr.port, r->why);
}

static int connect_now(struct rconn *r, struct ev_err *err)
{
    if (monotonic_ns() < r->retry_at_ns)
        return unreachable(r, err);
    struct timeval ct = {CONNECT_TIMEOUT_MS / 1000, (CONNECT_TIMEOUT_MS % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(r->addr.host, (int)r->addr.port, ct);
    if (!c || c->err) {
        broke(r, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return unreachable(r, err);
    }
    r->c = c;
    /* hiredis makes its socket without SOCK_CLOEXEC: set it, so that no child (the helper's
     * exec, a tool) inherits the connection */
    int fl = fcntl(c->fd, F_GETFD);
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    if (fl < 0 || fcntl(c->fd, F_SETFD, fl | FD_CLOEXEC) < 0 ||
        redisSetTimeout(c, tv) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK) {
        broke(r, "set up the socket");
        return unreachable(r, err);
    }
    if (r->addr.db) {
        redisReply *rep = redisCommand(c, "SELECT %u", r->addr.db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            char why[200];
            snprintf(why, sizeof(why), "SELECT %u: %s", r->addr.db, rep ? rep->str : c->errstr);
            if (rep)
                freeReplyObject(rep);
            broke(r, why);
            return unreachable(r, err);
        }
        freeReplyObject(rep);
    }
    r->backoff_ms = 0;
    r->generation++;
    return 0;
}

redisReply *rconn_cmd(struct rconn *r, struct ev_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = rconn_vcmd(r, err, fmt, ap);
    va_end(ap);
    return rep;
}

redisReply *rconn_vcmd(struct rconn *r, struct ev_err *err, const char *fmt, va_list ap)
{
    if (!r->c && connect_now(r, err) < 0)
        return NULL;
    redisReply *rep = redisvCommand(r->c, fmt, ap);
    if (!rep) {
        broke(r, r->c->errstr[0] ? r->c->errstr : "the connection broke");
        unreachable(r, err);
    }
    return rep;
}

void rconn_wait_retry(struct rconn *r, unsigned max_ms)
{
    uint64_t now = monotonic_ns();
    if (r->c || now >= r->retry_at_ns)
        return;
    uint64_t ms = (r->retry_at_ns - now) / 1000000ull + 1;
    sleep_ms(ms < max_ms ? (unsigned)ms : max_ms);
}

const redisReply *stream_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1];
    return NULL;
}
