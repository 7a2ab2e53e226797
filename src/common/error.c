#include "common/error.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ev_fail(struct ev_err *err, int errnum, const char *fmt, ...)
{
    assert(err);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    /* strerrordesc_np, not strerror: no locale, no lock, no allocation, since the sandbox's init
     * fails with it while it shares the memory of a caller that keeps running (sandbox/run.c),
     * and may be killed at any point; the text is strerror's in the C locale */
    const char *desc = errnum ? strerrordesc_np(errnum) : NULL;
    if (errnum && n >= 0 && (size_t)n < sizeof(err->msg)) {
        if (desc)
            snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", desc);
        else
            snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": Unknown error %d", errnum);
    }
    err->errnum = errnum;
    return -1;
}

void ev_log_stderr(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "envicutor: %s\n", msg);
}

int ev_wrap(struct ev_err *err, const char *fmt, ...)
{
    assert(err);
    char prefix[256], old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s%s", prefix, old);
    return -1;
}
