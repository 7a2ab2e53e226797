#include "http/auth.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int add_keys(struct auth_keys *k, const char *var, const char *text, enum auth_role role,
                    struct ev_err *err)
{
    if (!text)
        return 0;
    size_t entry = 1;
    const char *p = text;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0)
            return ev_fail(err, 0, "%s: entry %zu is empty (keys are separated by single commas)",
                           var, entry);
        for (size_t i = 0; i < len; i++)
            if (isspace((unsigned char)p[i]) || iscntrl((unsigned char)p[i]))
                return ev_fail(err, 0, "%s: entry %zu contains white space or a control character",
                               var, entry);
        if (len < AUTH_MIN_KEY_LEN || len > AUTH_MAX_KEY_LEN)
            return ev_fail(err, 0, "%s: entry %zu must be %d to %d characters long", var, entry,
                           AUTH_MIN_KEY_LEN, AUTH_MAX_KEY_LEN);
        unsigned char(*d)[SHA256_LEN] = realloc(k->digest, (k->n + 1) * sizeof(*d));
        if (!d)
            return ev_fail(err, ENOMEM, "%s", var);
        k->digest = d;
        enum auth_role *r = realloc(k->role, (k->n + 1) * sizeof(*r));
        if (!r)
            return ev_fail(err, ENOMEM, "%s", var);
        k->role = r;
        sha256(p, len, k->digest[k->n]);
        k->role[k->n] = role;
        k->n++;
        if (!end)
            return 0;
        p = end + 1;
        entry++;
    }
}

int auth_load(struct auth_keys *k, config_getenv_fn get, struct ev_err *err)
{
    memset(k, 0, sizeof(*k));
    if (add_keys(k, "ADMIN_API_KEYS", get("ADMIN_API_KEYS"), AUTH_ADMIN, err) < 0 ||
        add_keys(k, "EXECUTE_API_KEYS", get("EXECUTE_API_KEYS"), AUTH_EXECUTE, err) < 0) {
        auth_free(k);
        return -1;
    }
    return 0;
}

void auth_free(struct auth_keys *k)
{
    if (k->digest)
        memset(k->digest, 0, k->n * sizeof(*k->digest));
    free(k->digest);
    free(k->role);
    memset(k, 0, sizeof(*k));
}

const char *auth_token(const char *authorization, const char *x_auth_token)
{
    if (authorization) {
        if (strncasecmp(authorization, "Bearer ", 7) != 0)
            return NULL;
        const char *t = authorization + 7;
        while (*t == ' ')
            t++;
        return *t ? t : NULL;
    }
    return x_auth_token && *x_auth_token ? x_auth_token : NULL;
}

enum auth_role auth_lookup(const struct auth_keys *k, const char *token)
{
    if (!token)
        return AUTH_NONE;
    unsigned char d[SHA256_LEN];
    sha256(token, strlen(token), d);
    /* every key, every time: no early exit */
    unsigned best = AUTH_NONE;
    for (size_t i = 0; i < k->n; i++) {
        unsigned match = (unsigned)ct_equal(d, k->digest[i], SHA256_LEN);
        unsigned r = (unsigned)k->role[i] * match;
        best = r > best ? r : best;
    }
    return (enum auth_role)best;
}

int auth_check(const struct auth_keys *k, enum auth_role need, const char *authorization,
               const char *x_auth_token, const char **message)
{
    if (!auth_enabled(k))
        return 0;
    if (need == AUTH_NONE)
        return 0;
    const char *token = auth_token(authorization, x_auth_token);
    if (!token) {
        *message = "An API key is required: send it as \"Authorization: Bearer KEY\" or "
                   "\"X-Auth-Token: KEY\"";
        return 401;
    }
    enum auth_role have = auth_lookup(k, token);
    if (have == AUTH_NONE) {
        *message = "Invalid API key";
        return 401;
    }
    if (have < need) {
        *message = "This API key is not allowed to do this: it needs an admin key";
        return 403;
    }
    return 0;
}
