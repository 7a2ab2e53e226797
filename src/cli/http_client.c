#include "cli/http_client.h"

#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"

int http_parse_url(const char *url, struct http_target *t, struct ev_err *err)
{
    memset(t, 0, sizeof(*t));
    if (strncmp(url, "http://", 7) != 0)
        return ev_fail(err, 0, "server URL '%s': expected http://HOST:PORT", url);
    const char *h = url + 7, *end = h + strcspn(h, ":/");
    size_t hl = (size_t)(end - h);
    if (hl == 0 || hl >= sizeof(t->host))
        return ev_fail(err, 0, "server URL '%s': no host", url);
    memcpy(t->host, h, hl);
    const char *p = "80";
    size_t pl = 2;
    if (*end == ':') {
        p = end + 1;
        pl = strspn(p, "0123456789");
        if (pl == 0 || pl >= sizeof(t->port) || (p[pl] && strcmp(p + pl, "/") != 0))
            return ev_fail(err, 0, "server URL '%s': expected a port number after ':'", url);
    } else if (*end && strcmp(end, "/") != 0) {
        return ev_fail(err, 0, "server URL '%s': expected no path", url);
    }
    memcpy(t->port, p, pl);
    return 0;
}

static int connect_to(const struct http_target *t, struct ev_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc != 0)
        return ev_fail(err, 0, "%s:%s: %s", t->host, t->port, gai_strerror(rc));
    int fd = -1, last = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        /* A connect interrupted by a signal goes on in the background; poll for its end. */
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINTR) {
            last = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return ev_fail(err, last, "connect to %s:%s", t->host, t->port);
    return fd;
}

static int send_all(int fd, const char *buf, size_t len, struct ev_err *err)
{
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == ENOTCONN)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 1000) < 0 && errno != EINTR)
                return ev_fail(err, errno, "poll");
            continue;
        }
        if (w < 0)
            return ev_fail(err, errno, "send");
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads until the server closes the connection (it was asked to). */
static int recv_all(int fd, int timeout_s, char **out, size_t *len, struct ev_err *err)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return ev_fail(err, ENOMEM, "reading an answer");
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, timeout_s * 1000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return r == 0 ? ev_fail(err, 0, "no answer within %d seconds", timeout_s)
                          : ev_fail(err, errno, "poll");
        }
        if (cap - n < 4096) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return ev_fail(err, ENOMEM, "reading an answer");
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t got = recv(fd, buf + n, cap - n - 1, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            free(buf);
            return ev_fail(err, errno, "recv");
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* A chunked body decoded in place; -1 when it is malformed. */
static int dechunk(char *body, size_t *len)
{
    char *in = body, *out = body, *end = body + *len;
    for (;;) {
        char *nl = memchr(in, '\n', (size_t)(end - in));
        if (!nl)
            return -1;
        unsigned long size = strtoul(in, NULL, 16);
        in = nl + 1;
        if (size == 0)
            break;
        if (size > (size_t)(end - in))
            return -1;
        memmove(out, in, size);
        out += size;
        in += size;
        if (in < end && *in == '\r')
            in++;
        if (in < end && *in == '\n')
            in++;
    }
    *out = '\0';
    *len = (size_t)(out - body);
    return 0;
}

int http_call(const struct http_target *t, const char *method, const char *path, const char *body,
              int timeout_s, int *status, char **resp, struct ev_err *err)
{
    cleanup_close int fd = connect_to(t, err);
    if (fd < 0)
        return -1;
    char head[1024];
    char auth[600] = "";
    if (t->token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", t->token);
    int hl = snprintf(head, sizeof(head),
                      "%s %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n%s"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, t->host, t->port, auth, body ? strlen(body) : 0);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        return ev_fail(err, 0, "%s %s: the request's head is too long", method, path);
    if (send_all(fd, head, (size_t)hl, err) < 0 ||
        (body && send_all(fd, body, strlen(body), err) < 0))
        return ev_wrap(err, "%s %s", method, path);
    char *buf = NULL;
    size_t n = 0;
    if (recv_all(fd, timeout_s, &buf, &n, err) < 0)
        return ev_wrap(err, "%s %s", method, path);
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", status) != 1 || !sep) {
        free(buf);
        return ev_fail(err, 0, "%s %s: not an HTTP answer", method, path);
    }
    *sep = '\0';
    bool chunked = strcasestr(buf, "\r\ntransfer-encoding: chunked") != NULL;
    size_t blen = n - (size_t)(sep + 4 - buf);
    memmove(buf, sep + 4, blen + 1);
    if (chunked && dechunk(buf, &blen) < 0) {
        free(buf);
        return ev_fail(err, 0, "%s %s: a malformed chunked answer", method, path);
    }
    *resp = buf;
    return 0;
}
