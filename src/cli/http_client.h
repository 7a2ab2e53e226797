/* The least HTTP/1.1 client that talks to an Envicutor server: one request per connection
 * (Connection: close), a JSON body out, the status and the whole body back. Only
 * http://HOST:PORT base URLs: the checker speaks to a server on the same host or network. */
#ifndef ENVICUTOR_HTTP_CLIENT_H
#define ENVICUTOR_HTTP_CLIENT_H

#include <stddef.h>

#include "common/error.h"

struct http_target {
    char host[256];
    char port[8];
    const char *token; /* sent as "Authorization: Bearer TOKEN" when not NULL */
};

/* Parses "http://HOST:PORT" (a trailing '/' allowed; PORT defaults to 80). */
int http_parse_url(const char *url, struct http_target *t, struct ev_err *err);

/* method path with body (NULL for none); 0 with *status and *resp (NUL-terminated, the
 * caller frees it), or -1 when no answer came. timeout_s bounds each wait for data. */
int http_call(const struct http_target *t, const char *method, const char *path, const char *body,
              int timeout_s, int *status, char **resp, struct ev_err *err);

#endif
