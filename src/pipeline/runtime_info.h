/* What defines a runtime, for GET /runtimes/{id}, and its content hash.
 *
 * The hash covers what decides how a runtime behaves, and nothing else: provider, Nix shell,
 * scripts, source file name, environment and the limits its stages get on this server (the
 * system's values lowered by the runtime's own). Not its id, name or creation time: two servers
 * whose runtimes have the same hash run a submission the same way.
 *
 * Canonical form (version 1): a JSON object, compact (no white space), keys sorted by their
 * bytes, non-ASCII and control characters as \uXXXX escapes (upper-case hex digits; UTF-16
 * surrogate pairs beyond U+FFFF), integers in decimal;
 * limits are integers in the server's exact units (microseconds, kilobytes, counts), so no
 * floating-point rendering is involved. The hash is the SHA-256 of that text, written
 * "sha256:" and 64 lowercase hex digits. A change of the form bumps "format". */
#ifndef ENVICUTOR_RUNTIME_INFO_H
#define ENVICUTOR_RUNTIME_INFO_H

#include <jansson.h>

#include "pipeline/config.h"
#include "pipeline/runtime_store.h"

#define RUNTIME_HASH_FORMAT "envicutor-runtime-v1"

/* The limits of each stage of rt on a server with the configuration cfg. */
void runtime_limits(const struct runtime *rt, const struct ev_config *cfg,
                    struct ev_limits *compile, struct ev_limits *run);

/* The canonical text (malloc'ed) and its hash ("sha256:" + 64 hex digits). NULL / -1 when out
 * of memory. */
char *runtime_canonical(const struct runtime *rt, const struct ev_config *cfg);
int runtime_hash(const struct runtime *rt, const struct ev_config *cfg, char out[72]);

/* {"wall_time": 1.5, "memory": 262144, ...} in the API's units (seconds, kilobytes, counts). */
json_t *limits_json(const struct ev_limits *l);
/* The same for the limits a runtime sets itself (only those it sets). */
json_t *override_json(const struct limit_override *o);
/* The environment NAME=VALUE\0... as a JSON object. */
json_t *env_json(const char *env, size_t len);

#endif
