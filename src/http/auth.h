/* API keys (ADMIN_API_KEYS, EXECUTE_API_KEYS). Off when neither is set; otherwise every route
 * but GET /health needs a key, given as "Authorization: Bearer KEY" or "X-Auth-Token: KEY".
 *
 * The role a route needs is decided by the route alone (its line in the route table,
 * http/routes.c, read by route_role), with a default of admin: reading runtimes and executing
 * need an execute key (an admin key may do everything), and any other route, present or future
 * (POST /runtimes, DELETE, /update, /gc, ...), needs an admin key without anyone having to
 * remember to protect it.
 *
 * Keys are kept as SHA-256 digests only. A presented key is hashed and compared with every
 * configured digest in constant time, all of them every time, so neither the timing of a
 * refusal nor a key's length says anything about the keys. Keys are never logged. */
#ifndef ENVICUTOR_AUTH_H
#define ENVICUTOR_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "common/sha256.h"
#include "pipeline/config.h"

enum auth_role { AUTH_NONE = 0, AUTH_EXECUTE = 1, AUTH_ADMIN = 2 };

struct auth_keys {
    size_t n;
    unsigned char (*digest)[SHA256_LEN];
    enum auth_role *role;
};

/* Reads both variables. An empty entry (",," or a trailing comma), white space in or around a
 * key, or a key shorter than AUTH_MIN_KEY_LEN stops the start with a message naming the variable
 * and the entry's position (never the key). */
#define AUTH_MIN_KEY_LEN 8
#define AUTH_MAX_KEY_LEN 256
int auth_load(struct auth_keys *k, config_getenv_fn get, struct ev_err *err);
void auth_free(struct auth_keys *k);

static inline bool auth_enabled(const struct auth_keys *k)
{
    return k && k->n > 0;
}

/* The key of a request from its headers (either may be NULL); NULL when there is none. */
const char *auth_token(const char *authorization, const char *x_auth_token);

/* The role of a key: AUTH_NONE when it is not a configured key. */
enum auth_role auth_lookup(const struct auth_keys *k, const char *token);

/* Whether a request that needs the role need may go on: 0 when allowed; otherwise 401 (no key
 * or an unknown one) or 403 (a key without the role), with the message for the client. */
int auth_check(const struct auth_keys *k, enum auth_role need, const char *authorization,
               const char *x_auth_token, const char **message);

#endif
