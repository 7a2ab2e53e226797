/* The poll loop shared by the supervisors (see pump.h). */
#include "common/pump.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileutil.h"

#define PUMP_MAX_FDS 16

static int stream_open(struct pump_stream *s, int fd, struct ev_err *err)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    /* A reader drains until the pipe is empty and a writer writes until it is full: either
     * would block on a blocking descriptor, past a deadline. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return ev_fail(err, errno, "make pipe %d non-blocking", fd);
    return 0;
}

int pump_reader(struct pump_stream *s, int fd, pump_consume_fn consume, void *ctx,
                struct ev_err *err)
{
    int rc = stream_open(s, fd, err);
    s->consume = consume;
    s->ctx = ctx;
    return rc;
}

int pump_writer(struct pump_stream *s, int fd, pump_produce_fn produce, void *ctx,
                struct ev_err *err)
{
    int rc = stream_open(s, fd, err);
    s->produce = produce;
    s->ctx = ctx;
    return rc;
}

void pump_close(struct pump_stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

bool pump_drain(struct pump_stream *s)
{
    char buf[65536];
    while (s->fd >= 0) {
        ssize_t n = read(s->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return true;
        if (n <= 0) {
            pump_close(s);
            return false;
        }
        if (s->consume(s->ctx, buf, (size_t)n) < 0)
            s->failed = true;
        /* a short read emptied the pipe: no need for a read that says so */
        if ((size_t)n < sizeof(buf))
            return true;
    }
    return false;
}

/* Writes what the producer has until the pipe is full or the input ends. A reader that went
 * away (EPIPE: the program ended without reading all of its input) ends the stream; the
 * caller ignores SIGPIPE. */
static void feed(struct pump_stream *s)
{
    while (s->fd >= 0) {
        if (s->pend_off == s->pend_len) {
            ssize_t n = s->produce(s->ctx, s->pending, sizeof(s->pending));
            if (n <= 0) {
                s->failed |= n < 0;
                pump_close(s);
                return;
            }
            s->pend_off = 0;
            s->pend_len = (size_t)n;
        }
        ssize_t w = write(s->fd, s->pending + s->pend_off, s->pend_len - s->pend_off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w < 0) {
            s->failed |= errno != EPIPE;
            pump_close(s);
            return;
        }
        s->pend_off += (size_t)w;
    }
}

int pump_step(struct pump_stream *s, size_t ns, const int *events, size_t nev, int timeout_ms,
              unsigned *ready, struct ev_err *err)
{
    *ready = 0;
    if (ns + nev > PUMP_MAX_FDS)
        return ev_fail(err, EINVAL, "at most %d descriptors to pump", PUMP_MAX_FDS);
    struct pollfd p[PUMP_MAX_FDS];
    for (size_t i = 0; i < ns; i++)
        p[i] = (struct pollfd){s[i].fd, s[i].produce ? POLLOUT : POLLIN, 0};
    for (size_t i = 0; i < nev; i++)
        p[ns + i] = (struct pollfd){events[i], POLLIN, 0};
    int n = poll(p, (nfds_t)(ns + nev), timeout_ms);
    if (n < 0 && errno != EINTR)
        return ev_fail(err, errno, "poll");
    for (size_t i = 0; n > 0 && i < ns; i++) {
        if (!p[i].revents || s[i].fd < 0)
            continue;
        if (s[i].produce)
            feed(&s[i]);
        else
            pump_drain(&s[i]);
    }
    for (size_t i = 0; n > 0 && i < nev; i++)
        if (p[ns + i].revents)
            *ready |= 1u << i;
    return 0;
}

int pump_run(struct pump_stream *s, size_t ns, const int *events, size_t nev, uint64_t deadline_ns,
             struct ev_err *err)
{
    for (;;) {
        bool live = false;
        for (size_t i = 0; i < ns; i++)
            live |= s[i].fd >= 0;
        for (size_t i = 0; i < nev; i++)
            live |= events[i] >= 0;
        if (!live)
            return PUMP_ENDED;
        int timeout_ms = -1;
        if (deadline_ns) {
            uint64_t now = monotonic_ns();
            if (now >= deadline_ns)
                return PUMP_TIMEOUT;
            uint64_t ms = (deadline_ns - now + 999999) / 1000000;
            timeout_ms = ms > 1000000 ? 1000000 : (int)ms;
        }
        unsigned ready;
        if (pump_step(s, ns, events, nev, timeout_ms, &ready, err) < 0)
            return -1;
        if (ready)
            return __builtin_ctz(ready);
    }
}

int pump_buffer_consume(void *buffer, const char *buf, size_t n)
{
    struct pump_buffer *b = buffer;
    if (b->len >= b->cap) {
        b->truncated = true;
        return 0;
    }
    if (n > b->cap - b->len) {
        n = (size_t)(b->cap - b->len);
        b->truncated = true;
    }
    if (b->len + n + 1 > b->size) {
        char *p = realloc(b->data, b->len + n + 1);
        if (!p)
            return -1;
        b->data = p;
        b->size = b->len + n + 1;
    }
    memcpy(b->data + b->len, buf, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}
