/* One delivery of an asynchronous submission's result to its callback_url: an HTTP/1.1 POST of
 * a file's bytes (the result document), with a deadline over the whole exchange. No TLS: only
 * http:// URLs (common/url.h). The server's own HTTP stack (libmicrohttpd) only serves, and the
 * command line's client (cli/http_client.c) has no deadline, no address policy and sends only
 * strings, so this is a client of its own: small, and only for this. */
#ifndef ENVICUTOR_CALLBACK_H
#define ENVICUTOR_CALLBACK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/url.h"

/* POSTs size bytes of body_fd (read from offset 0) to u as application/json, with the header
 * X-Envicutor-Token: token. Every address the host resolves to is checked before it is
 * connected to (addr_is_public, unless allow_private): the check is on the address actually
 * used, so a name that resolves to a private address refuses at this moment whatever it
 * resolved to when the URL was accepted. The whole attempt (name resolution aside) ends by
 * timeout_ms, or as soon as *stop is set. 0 with the answer's status in *status, or -1. */
int callback_post(const struct http_url *u, const char *token, int body_fd, uint64_t size,
                  bool allow_private, unsigned timeout_ms, const atomic_bool *stop, int *status,
                  struct ev_err *err);

#endif
