#include "pipeline/catalog.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/filename.h"
#include "common/path.h"

/* The PATH the host provider gives programs: a command must be found there. */
static bool command_exists(const char *cmd)
{
    char path[512];
    return *cmd && !strchr(cmd, '/') &&
           find_in_path(cmd, "/usr/local/bin:/usr/bin:/bin", path, sizeof(path)) == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every failure below names the file and the field: the one message a catalog's author needs. */
#define FIELD_FAIL(err, file, field, ...)                                                          \
    (ev_fail(err, 0, __VA_ARGS__), ev_wrap(err, "%s: field '%s': ", file, field))

/* A string field: required ones must be present (and, with nonempty, not ""); an absent optional
 * one reads as "". */
static int string_field(json_t *o, const char *key, const char *file, const char *prefix,
                        bool required, bool nonempty, char **out, struct ev_err *err)
{
    char field[64];
    snprintf(field, sizeof(field), "%s%s", prefix, key);
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v && required)
        return FIELD_FAIL(err, file, field, "missing");
    if (v && !json_is_string(v))
        return FIELD_FAIL(err, file, field, "must be a string");
    const char *s = v ? json_string_value(v) : "";
    if (nonempty && !*s)
        return FIELD_FAIL(err, file, field, "must not be empty");
    if (v && strlen(s) != json_string_length(v))
        return FIELD_FAIL(err, file, field, "must not contain a NUL character");
    if (!(*out = strdup(s)))
        return ev_fail(err, ENOMEM, "%s", file);
    return 0;
}

static int only_keys(json_t *o, const char *const *keys, const char *file, const char *prefix,
                     struct ev_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool known = false;
        for (size_t i = 0; keys[i] && !known; i++)
            known = strcmp(key, keys[i]) == 0;
        if (!known) {
            char field[128];
            snprintf(field, sizeof(field), "%s%s", prefix, key);
            return FIELD_FAIL(err, file, field, "unknown field");
        }
    }
    return 0;
}

static int parse_env(json_t *o, const char *file, struct runtime *rt, struct ev_err *err)
{
    if (!o)
        return 0;
    if (!json_is_object(o))
        return FIELD_FAIL(err, file, "env", "must be an object of strings");
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        char field[128];
        snprintf(field, sizeof(field), "env.%s", key);
        if (!*key || strchr(key, '='))
            return FIELD_FAIL(err, file, field, "a variable's name is not empty and has no '='");
        if (!json_is_string(val) || strlen(json_string_value(val)) != json_string_length(val))
            return FIELD_FAIL(err, file, field, "must be a string without NUL characters");
        size_t add = strlen(key) + 1 + json_string_length(val) + 1;
        char *p = realloc(rt->env, rt->env_len + add + 1);
        if (!p)
            return ev_fail(err, ENOMEM, "%s", file);
        rt->env = p;
        snprintf(p + rt->env_len, add, "%s=%s", key, json_string_value(val));
        rt->env_len += add;
        p[rt->env_len] = '\0';
    }
    return 0;
}

/* The limits an entry sets itself, in the API's units (as POST /runtimes takes them). Only
 * their form is checked here: the server's configuration bounds them when they are used, and
 * an override never raises a limit above the server's (limits_override). */
static int parse_limits_field(json_t *o, const char *key, const char *file,
                              struct limit_override *ov, struct ev_err *err)
{
    memset(ov, 0, sizeof(*ov));
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_object(v))
        return FIELD_FAIL(err, file, key, "must be an object of limits");
    const char *name;
    json_t *val;
    json_object_foreach(v, name, val)
    {
        char field[128];
        snprintf(field, sizeof(field), "%s.%s", key, name);
        int i = 0;
        while (i < LIM_COUNT && strcmp(limit_names[i], name) != 0)
            i++;
        if (i == LIM_COUNT)
            return FIELD_FAIL(err, file, field, "unknown limit");
        double d = json_is_number(val) ? json_number_value(val) : NAN;
        const char *stage = strcmp(key, "run_limits") == 0 ? "run" : "compile";
        if (limit_check(i, d, 1ull << 40, stage, &ov->value[i], err) < 0)
            return ev_wrap(err, "%s: field '%s': ", file, field);
        ov->present[i] = true;
    }
    return 0;
}

static int parse_requires(json_t *o, const char *file, struct catalog_entry *e, struct ev_err *err)
{
    json_t *req = json_object_get(o, "requires");
    if (!json_is_array(req) || json_array_size(req) == 0)
        return FIELD_FAIL(err, file, "requires", "must be a non-empty array of command names");
    e->available = true;
    size_t i;
    json_t *val;
    json_array_foreach(req, i, val)
    {
        const char *cmd = json_is_string(val) ? json_string_value(val) : "";
        if (!*cmd || strchr(cmd, '/') || strlen(cmd) >= sizeof(e->missing)) {
            char field[64];
            snprintf(field, sizeof(field), "requires[%zu]", i);
            return FIELD_FAIL(err, file, field, "must be a command name (no '/')");
        }
        if (e->available && !command_exists(cmd)) {
            e->available = false;
            snprintf(e->missing, sizeof(e->missing), "%s", cmd);
        }
    }
    return 0;
}

static int parse_sample(json_t *o, const char *file, struct catalog_sample *s, struct ev_err *err)
{
    static const char *const keys[] = {"source_code", "input", "expected_output", NULL};
    json_t *v = json_object_get(o, "sample");
    if (!json_is_object(v))
        return FIELD_FAIL(err, file, "sample",
                          "must be an object with source_code, input and expected_output");
    if (only_keys(v, keys, file, "sample.", err) < 0 ||
        string_field(v, "source_code", file, "sample.", true, true, &s->source_code, err) < 0 ||
        string_field(v, "input", file, "sample.", true, false, &s->input, err) < 0 ||
        string_field(v, "expected_output", file, "sample.", true, false, &s->expected_output, err) <
            0)
        return -1;
    return 0;
}

static int script_length(const char *script, const char *file, const char *field,
                         struct ev_err *err)
{
    if (strlen(script) > CATALOG_SCRIPT_MAX_BYTES)
        return FIELD_FAIL(err, file, field, "longer than %d bytes", CATALOG_SCRIPT_MAX_BYTES);
    return 0;
}

static int parse_entry(json_t *root, const char *file, struct catalog_entry *e, struct ev_err *err)
{
    static const char *const keys[] = {
        "name",           "provider",   "requires", "source_file_name",
        "compile_script", "run_script", "env",      "compile_limits",
        "run_limits",     "sample",     NULL,
    };
    struct runtime *rt = &e->rt;
    if (!json_is_object(root))
        return ev_fail(err, 0, "%s: an entry is a JSON object", file);
    char *provider = NULL;
    int rc = only_keys(root, keys, file, "", err) < 0 ||
                     string_field(root, "name", file, "", true, true, &rt->name, err) < 0 ||
                     string_field(root, "provider", file, "", false, false, &provider, err) < 0
                 ? -1
                 : 0;
    if (rc == 0 && *provider && strcmp(provider, "host") != 0)
        rc = FIELD_FAIL(err, file, "provider", "must be \"host\"");
    free(provider);
    if (rc < 0 || string_field(root, "source_file_name", file, "", true, true,
                               &rt->source_file_name, err) < 0)
        return -1;
    if (!plain_file_name(rt->source_file_name))
        return FIELD_FAIL(err, file, "source_file_name",
                          "must be a plain file name (no '/', not '.' or '..')");
    if (string_field(root, "compile_script", file, "", false, false, &rt->compile_script, err) <
            0 ||
        string_field(root, "run_script", file, "", true, true, &rt->run_script, err) < 0 ||
        script_length(rt->compile_script, file, "compile_script", err) < 0 ||
        script_length(rt->run_script, file, "run_script", err) < 0 ||
        parse_env(json_object_get(root, "env"), file, rt, err) < 0 ||
        parse_limits_field(root, "compile_limits", file, &rt->compile_limits, err) < 0 ||
        parse_limits_field(root, "run_limits", file, &rt->run_limits, err) < 0 ||
        parse_requires(root, file, e, err) < 0 || parse_sample(root, file, &e->sample, err) < 0)
        return -1;
    return 0;
}

int catalog_load_entry(const char *dir, const char *file, struct catalog_entry *e,
                       struct ev_err *err)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->file, sizeof(e->file), "%s", file);
    char path[600];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
        return ev_fail(err, 0, "%s/%s: the path is too long", dir, file);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ev_fail(err, 0, "%s: %s (line %d)", path, je.text, je.line);
    struct runtime *rt = &e->rt;
    rt->provider = strdup("host");
    rt->nix_shell = strdup("");
    rt->env = calloc(1, 1);
    int rc = rt->provider && rt->nix_shell && rt->env ? parse_entry(root, path, e, err)
                                                      : ev_fail(err, ENOMEM, "%s", path);
    json_decref(root);
    if (rc < 0)
        catalog_entry_free(e);
    return rc;
}

void catalog_entry_free(struct catalog_entry *e)
{
    runtime_free(&e->rt);
    free(e->sample.source_code);
    free(e->sample.input);
    free(e->sample.expected_output);
    memset(&e->sample, 0, sizeof(e->sample));
}

int catalog_list(const char *dir, char ***names, size_t *n, struct ev_err *err)
{
    *names = NULL;
    *n = 0;
    cleanup_closedir DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : ev_fail(err, errno, "catalog directory %s", dir);
    char **list = calloc(CATALOG_MAX_ENTRIES, sizeof(*list));
    if (!list)
        return ev_fail(err, ENOMEM, "catalog directory %s", dir);
    size_t k = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        if (len >= sizeof(((struct catalog_entry *)0)->file) || k == CATALOG_MAX_ENTRIES) {
            catalog_list_free(list, k);
            return ev_fail(err, 0, "catalog directory %s: %s", dir,
                           k == CATALOG_MAX_ENTRIES ? "more than 256 entries"
                                                    : "a file name is too long");
        }
        if (!(list[k++] = strdup(de->d_name))) {
            catalog_list_free(list, k);
            return ev_fail(err, ENOMEM, "catalog directory %s", dir);
        }
        errno = 0;
    }
    if (errno != 0) {
        int e = errno;
        catalog_list_free(list, k);
        return ev_fail(err, e, "catalog directory %s", dir);
    }
    qsort(list, k, sizeof(list[0]), cmp_names);
    *names = list;
    *n = k;
    return 0;
}

void catalog_list_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int catalog_load(const char *dir, struct catalog_entry **out, size_t *n, struct ev_err *err)
{
    *out = NULL;
    *n = 0;
    char **names;
    size_t k;
    if (catalog_list(dir, &names, &k, err) < 0)
        return -1;
    struct catalog_entry *entries = calloc(k ? k : 1, sizeof(*entries));
    int rc = entries ? 0 : ev_fail(err, ENOMEM, "catalog");
    size_t m = 0;
    for (size_t i = 0; i < k && rc == 0; i++) {
        if (catalog_load_entry(dir, names[i], &entries[m], err) == 0)
            m++;
        else
            rc = -1;
    }
    catalog_list_free(names, k);
    if (rc < 0) {
        catalog_free(entries, m);
        return -1;
    }
    *out = entries;
    *n = m;
    return 0;
}

void catalog_free(struct catalog_entry *entries, size_t n)
{
    for (size_t i = 0; i < n; i++)
        catalog_entry_free(&entries[i]);
    free(entries);
}

/* An entry whose own limit is above what this server allows would be installed and then fail
 * every run (R refuses to start with fewer than about 200 descriptors): it is not installed,
 * and the log says which setting it needs. */
static bool fits_server(const struct catalog_entry *e, const struct ev_config *cfg)
{
    const struct limit_override *ov[2] = {&e->rt.compile_limits, &e->rt.run_limits};
    const struct ev_limits *max[2] = {&cfg->compile, &cfg->run};
    static const char *const stage[2] = {"COMPILE", "RUN"};
    for (int s = 0; s < 2; s++) {
        uint64_t v[LIM_COUNT];
        limits_to_array(max[s], v);
        for (int i = 0; i < LIM_COUNT; i++) {
            if (ov[s]->present[i] && ov[s]->value[i] > v[i]) {
                char upper[40];
                size_t k = 0;
                for (; limit_names[i][k] && k < sizeof(upper) - 1; k++)
                    upper[k] = (char)toupper((unsigned char)limit_names[i][k]);
                upper[k] = '\0';
                fprintf(stderr,
                        "envicutor: catalog: %s skipped (it needs %s_%s of at least %llu; this "
                        "server allows %llu)\n",
                        e->rt.name, stage[s], upper, (unsigned long long)ov[s]->value[i],
                        (unsigned long long)v[i]);
                return false;
            }
        }
    }
    return true;
}

int catalog_install(struct pipeline *p, struct catalog_entry *entries, size_t n, struct ev_err *err)
{
    bool done;
    if (store_get_flag(p->store, "catalog_installed", &done, err) < 0)
        return -1;
    if (done)
        return 0;
    int installed = 0;
    for (size_t i = 0; i < n; i++) {
        struct catalog_entry *e = &entries[i];
        if (!e->available) {
            fprintf(stderr, "envicutor: catalog: %s skipped (no %s on this host)\n", e->rt.name,
                    e->missing);
            continue;
        }
        if (!fits_server(e, p->cfg))
            continue;
        char *out = NULL, *errout = NULL;
        enum pipe_status st = pipeline_install(p, &e->rt, NULL, NULL, &out, &errout, err);
        if (st == PIPE_OK) {
            fprintf(stderr, "envicutor: catalog: installed %s (id %lld)\n", e->rt.name,
                    (long long)e->rt.id);
            installed++;
        } else if (st == PIPE_NAME_TAKEN) {
            fprintf(stderr, "envicutor: catalog: %s is already installed\n", e->rt.name);
        } else {
            fprintf(stderr, "envicutor: catalog: %s failed: %s%s\n", e->rt.name,
                    st == PIPE_SETUP_FAILED ? "set-up: " : "",
                    st == PIPE_SETUP_FAILED ? (errout ? errout : "") : err->msg);
        }
        free(out);
        free(errout);
        if (st == PIPE_STOPPING || st == PIPE_INTERNAL)
            return -1;
    }
    if (store_set_flag(p->store, "catalog_installed", err) < 0)
        return -1;
    return installed;
}
