#include "http/callback.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"

/* Waits for events on fd until the deadline, in slices, so that a stop is seen within one. */
static int wait_fd(int fd, short events, uint64_t deadline, const atomic_bool *stop,
                   struct ev_err *err)
{
    for (;;) {
        if (stop && atomic_load(stop))
            return ev_fail(err, 0, "the server is stopping");
        uint64_t now = monotonic_ns();
        if (now >= deadline)
            return ev_fail(err, 0, "timed out");
        uint64_t left_ms = (deadline - now) / 1000000 + 1;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left_ms > 200 ? 200 : (int)left_ms);
        if (n < 0 && errno != EINTR)
            return ev_fail(err, errno, "poll");
        if (n > 0)
            return 0;
    }
}

static int connect_one(const struct addrinfo *a, uint64_t deadline, const atomic_bool *stop,
                       struct ev_err *err)
{
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0)
        return ev_fail(err, errno, "socket");
    if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS && errno != EINTR) {
        ev_fail(err, errno, "connect");
        close(fd);
        return -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (wait_fd(fd, POLLOUT, deadline, stop, err) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        if (soerr)
            ev_fail(err, soerr, "connect");
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_to(const struct http_url *u, bool allow_private, uint64_t deadline,
                      const atomic_bool *stop, struct ev_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc != 0)
        return ev_fail(err, rc == EAI_SYSTEM ? errno : 0, "resolve %s: %s", u->host,
                       gai_strerror(rc));
    int fd = -1;
    bool refused = false;
    ev_fail(err, 0, "%s has no address", u->host);
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        if (!allow_private && !addr_is_public(a->ai_addr)) {
            refused = true;
            continue;
        }
        fd = connect_one(a, deadline, stop, err);
    }
    freeaddrinfo(res);
    if (fd < 0 && refused)
        return ev_fail(err, 0,
                       "%s resolves to a loopback, private or reserved address, which callbacks "
                       "may not reach (CALLBACK_ALLOW_PRIVATE)",
                       u->host);
    return fd;
}

static int send_all(int fd, const char *buf, size_t len, uint64_t deadline, const atomic_bool *stop,
                    struct ev_err *err)
{
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (errno == EAGAIN && wait_fd(fd, POLLOUT, deadline, stop, err) < 0)
                return -1;
            continue;
        }
        if (w < 0)
            return ev_fail(err, errno, "send");
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads the status line: only "HTTP/1.x NNN" matters; the rest of the answer is not read. */
static int read_status(int fd, uint64_t deadline, const atomic_bool *stop, int *status,
                       struct ev_err *err)
{
    char buf[256];
    size_t n = 0;
    while (n < sizeof(buf) - 1) {
        ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (errno == EAGAIN && wait_fd(fd, POLLIN, deadline, stop, err) < 0)
                return -1;
            continue;
        }
        if (r < 0)
            return ev_fail(err, errno, "recv");
        if (r == 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
        if (strchr(buf, '\n'))
            break;
    }
    buf[n] = '\0';
    if (sscanf(buf, "HTTP/1.%*1[01] %3d", status) != 1)
        return ev_fail(err, 0, "not an HTTP answer");
    return 0;
}

int callback_post(const struct http_url *u, const char *token, int body_fd, uint64_t size,
                  bool allow_private, unsigned timeout_ms, const atomic_bool *stop, int *status,
                  struct ev_err *err)
{
    uint64_t deadline = monotonic_ns() + (uint64_t)timeout_ms * 1000000;
    cleanup_close int fd = connect_to(u, allow_private, deadline, stop, err);
    if (fd < 0)
        return -1;
    bool v6 = strchr(u->host, ':') != NULL;
    char head[URL_MAX + 512];
    int hl = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nConnection: close\r\n"
                      "User-Agent: envicutor\r\nContent-Type: application/json\r\n"
                      "X-Envicutor-Token: %s\r\nContent-Length: %llu\r\n\r\n",
                      u->path, v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, token,
                      (unsigned long long)size);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        return ev_fail(err, 0, "the request's head is too long");
    if (send_all(fd, head, (size_t)hl, deadline, stop, err) < 0)
        return -1;
    char buf[65536];
    for (uint64_t off = 0; off < size;) {
        size_t want = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
        ssize_t got = pread_full(body_fd, buf, want, (off_t)off);
        if (got <= 0)
            return ev_fail(err, got < 0 ? errno : 0, "read the result file");
        if (send_all(fd, buf, (size_t)got, deadline, stop, err) < 0)
            return -1;
        off += (uint64_t)got;
    }
    return read_status(fd, deadline, stop, status, err);
}
