/* hiredis, loaded on first use (common/lazylib.h): the cluster's Redis client. */
#include <stdarg.h>

#include <hiredis/hiredis.h>

#include "common/lazylib.h"

#define FUNCTIONS(F, V, N)                                                                         \
    F(redisContext *, redisConnectWithTimeout,                                                     \
      (const char *ip, int port, const struct timeval tv), (ip, port, tv))                         \
    F(int, redisSetTimeout, (redisContext * c, const struct timeval tv), (c, tv))                  \
    F(int, redisEnableKeepAlive, (redisContext * c), (c))                                          \
    F(void *, redisvCommand, (redisContext * c, const char *format, va_list ap), (c, format, ap))  \
    V(redisFree, (redisContext * c), (c))                                                          \
    V(freeReplyObject, (void *reply), (reply))

LAZY_LIBRARY("libhiredis.so.0.14", FUNCTIONS)

void *redisCommand(redisContext *c, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    void *reply = redisvCommand(c, format, ap);
    va_end(ap);
    return reply;
}

int hiredis_load(struct ev_err *err)
{
    return lazy_lib_load(&lazy_this, err);
}
