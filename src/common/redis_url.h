/* REDIS_URL, redis://host:port[/db]: parsed on its own so that the configuration can refuse a
 * malformed one at start, with a message, before anything connects. */
#ifndef ENVICUTOR_REDIS_URL_H
#define ENVICUTOR_REDIS_URL_H

#include "common/error.h"

struct redis_addr {
    char host[256];
    unsigned port; /* 1 .. 65535; 6379 when the URL names none */
    unsigned db;   /* 0 when the URL names none */
};

/* 0, or -1 with a message naming what is wrong in err. The host is a name or an IPv4 address
 * of [A-Za-z0-9.-], or an IPv6 address in brackets; no user or password (not supported). */
int redis_url_parse(const char *url, struct redis_addr *a, struct ev_err *err);

#endif
