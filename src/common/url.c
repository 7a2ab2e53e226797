#include "common/url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A host name's characters (RFC 3986 reg-name, without percent-encoding or sub-delims, which
 * no resolver needs) or an IPv4 address's. */
static bool host_chars(const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-')
            return false;
    return true;
}

int url_parse_http(const char *url, struct http_url *u, struct ev_err *err)
{
    memset(u, 0, sizeof(*u));
    size_t len = strlen(url);
    if (len >= URL_MAX)
        return ev_fail(err, 0, "callback_url is longer than %d bytes", URL_MAX - 1);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return ev_fail(
                err, 0, "callback_url may hold only printable ASCII without spaces (byte %zu)", i);
    if (strncasecmp(url, "https://", 8) == 0)
        return ev_fail(err, 0,
                       "callback_url: https is not supported, only http:// URLs (the server "
                       "links no TLS library)");
    if (strncasecmp(url, "http://", 7) != 0)
        return ev_fail(err, 0, "callback_url must be an http:// URL");
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (memchr(a, '@', alen))
        return ev_fail(err, 0, "callback_url may not hold a user name or password");
    if (strchr(url, '#'))
        return ev_fail(err, 0, "callback_url may not hold a fragment ('#')");
    const char *h = a, *hend, *rest;
    if (*a == '[') {
        hend = memchr(a, ']', alen);
        if (!hend)
            return ev_fail(err, 0, "callback_url: an IPv6 address without its closing ']'");
        h = a + 1;
        rest = hend + 1;
        size_t hl = (size_t)(hend - h);
        struct in6_addr six;
        if (hl == 0 || hl >= sizeof(u->host))
            return ev_fail(err, 0, "callback_url: a malformed IPv6 address");
        memcpy(u->host, h, hl);
        if (inet_pton(AF_INET6, u->host, &six) != 1)
            return ev_fail(err, 0, "callback_url: a malformed IPv6 address");
    } else {
        hend = a + strcspn(a, ":/?#");
        rest = hend;
        size_t hl = (size_t)(hend - h);
        if (hl == 0)
            return ev_fail(err, 0, "callback_url has no host");
        if (hl >= sizeof(u->host) || !host_chars(h, hl) || h[0] == '-' || h[0] == '.')
            return ev_fail(err, 0, "callback_url: a malformed host name");
        memcpy(u->host, h, hl);
    }
    snprintf(u->port, sizeof(u->port), "80");
    if (*rest == ':') {
        const char *p = rest + 1;
        size_t pl = strspn(p, "0123456789");
        unsigned long port = pl && pl <= 5 ? strtoul(p, NULL, 10) : 0;
        if (port < 1 || port > 65535)
            return ev_fail(err, 0, "callback_url: the port must be a number from 1 to 65535");
        snprintf(u->port, sizeof(u->port), "%lu", port);
        rest = p + pl;
    }
    if (*rest && *rest != '/' && *rest != '?')
        return ev_fail(err, 0, "callback_url: unexpected characters after the host");
    snprintf(u->path, sizeof(u->path), "%s%s", *rest == '/' ? "" : "/", rest);
    return 0;
}

static bool v4_public(uint32_t a)
{
    struct {
        uint32_t net, mask;
    } const blocked[] = {
        {0x00000000, 0xff000000}, /* 0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 */
        {0x64400000, 0xffc00000}, /* 100.64/10 carrier-grade NAT */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local (cloud metadata services) */
        {0xac100000, 0xfff00000}, /* 172.16/12 */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 protocol assignments */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xe0000000, 0xe0000000}, /* 224/4 multicast, 240/4 reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++)
        if ((a & blocked[i].mask) == blocked[i].net)
            return false;
    return true;
}

bool addr_is_public(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_public(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6)
        return false;
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t zero[12];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, zero, 12) == 0 || memcmp(b, mapped, 12) == 0) /* ::, ::1, ::a.b.c.d */
        return v4_public((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 |
                         b[15]);
    if ((b[0] & 0xfe) == 0xfc) /* fc00::/7 unique local */
        return false;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
        return false;
    if (b[0] == 0xff) /* multicast */
        return false;
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) /* 64:ff9b::/96 NAT64 */
        return v4_public((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 |
                         b[15]);
    return true;
}
