/* One connection to Redis (hiredis), with what the cluster needs around it: it is made on first
 * use and made again after a failure, never more often than a back-off allows (100 ms doubling
 * to 5 s), so that while Redis is down each caller gets an answer at once ("Redis at host:port
 * is unreachable: why") instead of waiting for a connect per request.
 *
 * Not shared between threads without its lock: a caller takes mu around a command, or around a
 * sequence that must not interleave with another thread's (MULTI ... EXEC). */
#ifndef ENVICUTOR_CLUSTER_REDIS_H
#define ENVICUTOR_CLUSTER_REDIS_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>

#include "common/error.h"
#include "common/redis_url.h"

struct rconn {
    pthread_mutex_t mu;
    struct redis_addr addr;
    redisContext *c;
    unsigned timeout_ms;  /* of a command's reply; a blocking read needs more than its BLOCK */
    unsigned generation;  /* connections made so far: a caller that sets up state once per
                           * connection (a consumer group) compares it with the one it saw */
    uint64_t retry_at_ns; /* no new attempt before (monotonic) */
    unsigned backoff_ms;
    char why[200]; /* why the last attempt or command failed */
};

void rconn_init(struct rconn *r, const struct redis_addr *a, unsigned timeout_ms);
void rconn_close(struct rconn *r);

/* A command in hiredis's format (%s a C string, %b a pointer and a length: the bytes are sent
 * as they are, one copy into hiredis's buffer). Connects first when needed. The reply, which
 * may be an error reply (type REDIS_REPLY_ERROR, for the caller to read), or NULL when Redis
 * could not be reached or the connection broke: err then says so, and the connection is made
 * again by a later call. r->mu held by the caller. */
redisReply *rconn_cmd(struct rconn *r, struct ev_err *err, const char *fmt, ...);
redisReply *rconn_vcmd(struct rconn *r, struct ev_err *err, const char *fmt, va_list ap);
/* The value of a stream entry's field (the flat array of names and values an XREAD or
 * XREADGROUP gives), or NULL. */
const redisReply *stream_field(const redisReply *fields, const char *name);

/* Waits (at most max_ms) until the back-off allows another attempt: for a loop that has
 * nothing to do while Redis is away. */
void rconn_wait_retry(struct rconn *r, unsigned max_ms);

/* Sleeps ms milliseconds (EINTR resumes the sleep). */
void sleep_ms(unsigned ms);

#endif
