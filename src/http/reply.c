#include "http/reply.h"

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/logsafe.h"
#include "common/utf8.h"
#include "http/mhd_loader.h"

bool request_aborted(void *arg)
{
    struct request *rq = arg;
    if (rq->cancelled)
        return atomic_load(rq->cancelled);
    if (rq->fd < 0)
        return false;
    /* A client that closed its end (FIN) or reset the connection. Data the client may have
     * pipelined is not a disconnect, so POLLIN is not asked for. */
    struct pollfd p = {rq->fd, POLLRDHUP, 0};
    int n = poll(&p, 1, 0);
    return n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

bool request_flag(const struct request *rq, const char *name)
{
    if (!rq->conn) {
        size_t n = strlen(name);
        for (const char *f = rq->flags; f && *f;) {
            size_t len = strcspn(f, ",");
            if (len == n && strncmp(f, name, n) == 0)
                return true;
            f += len + (f[len] == ',');
        }
        return false;
    }
    const char *v = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
    return v && strcasecmp(v, "true") == 0;
}

void request_flags_text(const struct request *rq, char *out, size_t size)
{
    snprintf(out, size, "%s%s", request_flag(rq, "is_project") ? "is_project," : "",
             request_flag(rq, "base64_output") ? "base64_output," : "");
}

void reply_message(struct reply *r, int status, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    size_t n;
    char *clean = utf8_sanitize(buf, strlen(buf), &n);
    r->status = status;
    r->json = json_pack("{s:s%}", "message", clean ? clean : "", clean ? n : 0);
    free(clean);
}

void reply_internal(struct reply *r, const struct request *rq, const char *cause)
{
    char buf[1024];
    fprintf(stderr, "req %s: internal error: %s\n", rq->rid ? rq->rid : "-",
            log_safe(cause, buf, sizeof(buf)));
    reply_message(r, 500, "Internal server error");
}

void reply_pipe_status(struct reply *r, const struct request *rq, enum pipe_status st,
                       const struct ev_err *err)
{
    switch (st) {
    case PIPE_QUEUE_FULL:
        reply_message(r, 503,
                      "The server is busy: the queue of waiting requests is full, try again later");
        r->retry_after = 1;
        break;
    case PIPE_STOPPING:
        reply_message(r, 503, "The server is shutting down");
        break;
    case PIPE_ABORTED:
        r->drop = true;
        break;
    case PIPE_INTERNAL:
        reply_internal(r, rq, err->msg);
        break;
    default: /* err was not filled: its contents are whatever the caller left there */
        reply_internal(r, rq, "unexpected pipeline status");
    }
}

json_t *output_pair(const char *out, const char *errout)
{
    size_t n1, n2;
    char *a = utf8_sanitize(out ? out : "", out ? strlen(out) : 0, &n1);
    char *b = utf8_sanitize(errout ? errout : "", errout ? strlen(errout) : 0, &n2);
    json_t *j = a && b ? json_pack("{s:s%,s:s%}", "stdout", a, n1, "stderr", b, n2) : NULL;
    free(a);
    free(b);
    return j;
}
