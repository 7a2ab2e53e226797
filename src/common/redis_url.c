#include "common/redis_url.h"

#include <stdio.h>
#include <string.h>

static int parse_number(const char *s, size_t len, unsigned max, unsigned *out)
{
    if (len == 0 || len > 10)
        return -1;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int redis_url_parse(const char *url, struct redis_addr *a, struct ev_err *err)
{
    static const char scheme[] = "redis://";
    memset(a, 0, sizeof(*a));
    a->port = 6379;
    if (!url || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return ev_fail(err, 0, "REDIS_URL: expected redis://host:port[/db], got '%.200s'",
                       url ? url : "");
    const char *h = url + sizeof(scheme) - 1;
    const char *host_end;
    const char *rest;
    if (*h == '[') {
        host_end = strchr(h, ']');
        if (!host_end || host_end == h + 1)
            return ev_fail(err, 0, "REDIS_URL: unclosed or empty [IPv6 address] in '%.200s'", url);
        h++;
        rest = host_end + 1;
        for (const char *c = h; c < host_end; c++)
            if (!strchr("0123456789abcdefABCDEF:.", *c))
                return ev_fail(err, 0, "REDIS_URL: bad IPv6 address in '%.200s'", url);
    } else {
        host_end = h + strcspn(h, ":/");
        rest = host_end;
        for (const char *c = h; c < host_end; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '.' || *c == '-'))
                return ev_fail(err, 0,
                               "REDIS_URL: the host may only hold letters, digits, '.' and '-' "
                               "(no user or password), in '%.200s'",
                               url);
    }
    size_t host_len = (size_t)(host_end - h);
    if (host_len == 0)
        return ev_fail(err, 0, "REDIS_URL: no host in '%.200s'", url);
    if (host_len >= sizeof(a->host))
        return ev_fail(err, 0, "REDIS_URL: the host is longer than %zu bytes", sizeof(a->host) - 1);
    memcpy(a->host, h, host_len);
    a->host[host_len] = '\0';
    if (*rest == ':') {
        const char *p = rest + 1;
        size_t n = strcspn(p, "/");
        if (parse_number(p, n, 65535, &a->port) < 0 || a->port == 0)
            return ev_fail(
                err, 0, "REDIS_URL: the port must be a number from 1 to 65535, in '%.200s'", url);
        rest = p + n;
    }
    if (*rest == '/') {
        const char *p = rest + 1;
        /* "redis://host:port/" names no database: the default one */
        if (*p && parse_number(p, strlen(p), 15, &a->db) < 0)
            return ev_fail(
                err, 0, "REDIS_URL: the database must be a number from 0 to 15, in '%.200s'", url);
        rest = p + strlen(p);
    }
    if (*rest)
        return ev_fail(err, 0, "REDIS_URL: unexpected '%.50s' in '%.200s'", rest, url);
    return 0;
}
