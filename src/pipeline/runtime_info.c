#include "pipeline/runtime_info.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sha256.h"

/* Exact units, for the canonical form. */
static const char *const exact_names[LIM_COUNT] = {
    "wall_time_us",           "cpu_time_us",    "memory_kb",
    "extra_time_us",          "max_open_files", "max_file_size_kb",
    "max_number_of_processes"};
static const bool in_seconds[LIM_COUNT] = {true, true, false, true, false, false, false};

void runtime_limits(const struct runtime *rt, const struct ev_config *cfg,
                    struct ev_limits *compile, struct ev_limits *run)
{
    limits_override(&cfg->compile, &rt->compile_limits, compile);
    limits_override(&cfg->run, &rt->run_limits, run);
}

json_t *env_json(const char *env, size_t len)
{
    json_t *o = json_object();
    for (const char *e = env; o && e && e < env + len;
         e += strnlen(e, (size_t)(env + len - e)) + 1) {
        /* bounded by len: the last entry need not be NUL-terminated */
        size_t elen = strnlen(e, (size_t)(env + len - e));
        const char *eq = memchr(e, '=', elen);
        if (!eq)
            continue;
        char name[256];
        size_t n = (size_t)(eq - e);
        if (n >= sizeof(name))
            continue;
        memcpy(name, e, n);
        name[n] = '\0';
        if (json_object_set_new(o, name, json_stringn(eq + 1, elen - n - 1)) < 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

static json_t *exact_limits(const struct ev_limits *l)
{
    uint64_t v[LIM_COUNT];
    limits_to_array(l, v);
    json_t *o = json_object();
    for (int i = 0; o && i < LIM_COUNT; i++)
        if (json_object_set_new(o, exact_names[i], json_integer((json_int_t)v[i])) < 0) {
            json_decref(o);
            o = NULL;
        }
    return o;
}

json_t *limits_json(const struct ev_limits *l)
{
    struct limit_override all = {0};
    limits_to_array(l, all.value);
    for (int i = 0; i < LIM_COUNT; i++)
        all.present[i] = true;
    return override_json(&all);
}

json_t *override_json(const struct limit_override *ov)
{
    json_t *o = json_object();
    for (int i = 0; o && i < LIM_COUNT; i++) {
        if (!ov->present[i])
            continue;
        json_t *v = in_seconds[i] ? json_real((double)ov->value[i] / 1e6)
                                  : json_integer((json_int_t)ov->value[i]);
        if (json_object_set_new(o, limit_names[i], v) < 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

char *runtime_canonical(const struct runtime *rt, const struct ev_config *cfg)
{
    struct ev_limits c, r;
    runtime_limits(rt, cfg, &c, &r);
    json_t *j = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:o?,s:o?,s:o?}", "format", RUNTIME_HASH_FORMAT, "provider",
        rt->provider ? rt->provider : "", "nix_shell", rt->nix_shell ? rt->nix_shell : "",
        "compile_script", rt->compile_script ? rt->compile_script : "", "run_script",
        rt->run_script ? rt->run_script : "", "source_file_name",
        rt->source_file_name ? rt->source_file_name : "", "env", env_json(rt->env, rt->env_len),
        "compile_limits", exact_limits(&c), "run_limits", exact_limits(&r));
    if (!j)
        return NULL;
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(j);
    return text;
}

int runtime_hash(const struct runtime *rt, const struct ev_config *cfg, char out[72])
{
    char *text = runtime_canonical(rt, cfg);
    if (!text)
        return -1;
    unsigned char d[SHA256_LEN];
    sha256(text, strlen(text), d);
    free(text);
    char hex[2 * SHA256_LEN + 1];
    sha256_hex(d, hex);
    snprintf(out, 72, "sha256:%s", hex);
    return 0;
}
