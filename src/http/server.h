/* The HTTP server (libmicrohttpd, one thread per connection). It only translates: a request
 * becomes a call into the pipeline, the outcome becomes a status and a JSON body. */
#ifndef ENVICUTOR_SERVER_H
#define ENVICUTOR_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "http/auth.h"
#include "pipeline/pipeline.h"

struct http_server {
    struct MHD_Daemon *daemon;
    struct pipeline *pipeline;
    const struct ev_config *cfg;
    const struct auth_keys *auth; /* set before http_start; NULL or empty: no API keys */
    atomic_uint_fast64_t next_id;
};

int http_start(struct http_server *s, int listen_fd, struct pipeline *p,
               const struct ev_config *cfg, struct ev_err *err);
/* Stops accepting connections (the pipeline is stopped by the caller) and waits for the
 * connections' threads. */
void http_stop(struct http_server *s);

#endif
