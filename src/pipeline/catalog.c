#include "pipeline/catalog.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
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

static char *dup_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return strdup(json_is_string(v) ? json_string_value(v) : "");
}

static int load_entry(const char *dir, const char *file, struct catalog_entry *e,
                      struct ev_err *err)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ev_fail(err, 0, "catalog %s: %s (line %d)", path, je.text, je.line);
    memset(e, 0, sizeof(*e));
    snprintf(e->file, sizeof(e->file), "%s", file);
    struct runtime *rt = &e->rt;
    rt->name = dup_field(root, "name");
    rt->provider = strdup("host");
    rt->source_file_name = dup_field(root, "source_file_name");
    rt->compile_script = dup_field(root, "compile_script");
    rt->run_script = dup_field(root, "run_script");
    rt->nix_shell = strdup("");
    rt->env = calloc(1, 1);
    int rc = 0;
    if (!rt->name || !rt->provider || !rt->source_file_name || !rt->compile_script ||
        !rt->run_script || !rt->nix_shell || !rt->env) {
        rc = ev_fail(err, ENOMEM, "catalog %s", path);
        goto out;
    }
    if (!rt->name[0] || !rt->run_script[0] || !rt->source_file_name[0]) {
        rc =
            ev_fail(err, 0, "catalog %s: name, run_script and source_file_name are required", path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(json_object_get(root, "env"), key, val)
    {
        if (!json_is_string(val))
            continue;
        size_t add = strlen(key) + 1 + json_string_length(val) + 1;
        char *p = realloc(rt->env, rt->env_len + add + 1);
        if (!p) {
            rc = ev_fail(err, ENOMEM, "catalog %s", path);
            goto out;
        }
        rt->env = p;
        snprintf(p + rt->env_len, add, "%s=%s", key, json_string_value(val));
        rt->env_len += add;
        p[rt->env_len] = '\0';
    }
    e->available = true;
    size_t i;
    json_array_foreach(json_object_get(root, "requires"), i, val)
    {
        if (json_is_string(val) && !command_exists(json_string_value(val))) {
            e->available = false;
            snprintf(e->missing, sizeof(e->missing), "%s", json_string_value(val));
            break;
        }
    }
out:
    json_decref(root);
    if (rc < 0)
        runtime_free(rt);
    return rc;
}

int catalog_load(const char *dir, struct catalog_entry **out, size_t *n, struct ev_err *err)
{
    *out = NULL;
    *n = 0;
    cleanup_closedir DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : ev_fail(err, errno, "catalog directory %s", dir);
    char *names[64];
    size_t k = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && k < 64) {
        size_t len = strlen(de->d_name);
        if (len > 5 && len < 120 && strcmp(de->d_name + len - 5, ".json") == 0)
            if ((names[k] = strdup(de->d_name)) != NULL)
                k++;
    }
    qsort(names, k, sizeof(names[0]), cmp_names);
    struct catalog_entry *entries = calloc(k ? k : 1, sizeof(*entries));
    int rc = entries ? 0 : ev_fail(err, ENOMEM, "catalog");
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (rc == 0 && load_entry(dir, names[i], &entries[m], err) == 0)
            m++;
        else if (rc == 0)
            rc = -1;
        free(names[i]);
    }
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
        runtime_free(&entries[i].rt);
    free(entries);
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
