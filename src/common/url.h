/* http:// URLs given by clients (an asynchronous submission's callback_url), and which network
 * addresses a server may be told to connect to. Pure functions: tested on their own. */
#ifndef ENVICUTOR_URL_H
#define ENVICUTOR_URL_H

#include <stdbool.h>
#include <sys/socket.h>

#include "common/error.h"

#define URL_MAX 2048

struct http_url {
    char host[256]; /* a name or an address; an IPv6 address without its brackets */
    char port[6];
    char path[URL_MAX]; /* from its '/', the query included; "/" when the URL has none */
};

/* Parses "http://HOST[:PORT][/PATH][?QUERY]". Refused, with a message for the client: another
 * scheme (https is named: it is not supported), user information ("user@"), a fragment, an
 * empty or malformed host, a port outside 1..65535, and any byte that is not printable ASCII
 * (a space or a line break would let a URL write its own request lines). */
int url_parse_http(const char *url, struct http_url *u, struct ev_err *err);

/* Whether an address is one of the public Internet's: not loopback, private (RFC 1918, unique
 * local), link-local, carrier-grade NAT, multicast, unspecified, reserved or an IPv4 address
 * written as IPv6 (mapped or compatible) whose IPv4 address is one of those. */
bool addr_is_public(const struct sockaddr *sa);

#endif
