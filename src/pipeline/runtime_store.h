/* The runtime store: runtimes in an SQLite database under the data directory, each with a
 * directory of its own (compile.sh, run.sh) that runs mount read-only at /runtime.
 *
 * All-or-nothing, even across kill -9: a runtime's directory is written completely, under a
 * fresh random name, before the one transaction that inserts its row; a deletion commits the
 * removal of the row before the directory is removed. So a row always has its whole
 * directory, and a directory without a row is an orphan that the next start removes
 * (store_sweep). */
#ifndef ENVICUTOR_RUNTIME_STORE_H
#define ENVICUTOR_RUNTIME_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "pipeline/config.h"

struct runtime {
    int64_t id;
    char *name;
    char *provider; /* "host" or "nix" */
    char *source_file_name;
    char *compile_script; /* "" when none */
    char *run_script;
    char *nix_shell; /* "" for host runtimes */
    char *env;       /* NAME=VALUE\0NAME=VALUE\0... */
    size_t env_len;
    char dir[40]; /* directory name under runtimes/ */
    /* The runtime's own limits: for it, each is both the default and the maximum. */
    struct limit_override compile_limits, run_limits;
    int64_t created_at; /* seconds since the epoch; 0 for rows older than the column */
};

void runtime_free(struct runtime *rt);

struct runtime_summary {
    int64_t id;
    char *name;
};

struct store;

/* Opens (creating) data_dir/envicutor.db and data_dir/runtimes. */
struct store *store_open(const char *data_dir, struct ev_err *err);
void store_close(struct store *s);
const char *store_runtimes_dir(const struct store *s);

/* Removes runtime directories that no row refers to; returns how many. */
int store_sweep(struct store *s, struct ev_err *err);

/* 0 and the list (ordered by id) or -1. */
int store_list(struct store *s, struct runtime_summary **out, size_t *n, struct ev_err *err);
void store_list_free(struct runtime_summary *list, size_t n);
/* 0 with *found, and out filled when it is true; -1 on error. */
int store_get(struct store *s, int64_t id, struct runtime *out, bool *found, struct ev_err *err);
/* *installed: whether the runtime under id is the one installed in directory dir (false when
 * there is none or another, deleted and installed again under the same id). 0, or -1 on
 * error. */
int store_is_installed(struct store *s, int64_t id, const char *dir, bool *installed,
                       struct ev_err *err);
/* *taken: whether a runtime has this name. 0, or -1 on error. */
int store_name_taken(struct store *s, const char *name, bool *taken, struct ev_err *err);

/* Writes rt's directory under a fresh name (set in rt->dir), complete and synced. */
int store_prepare(struct store *s, struct runtime *rt, struct ev_err *err);
/* *taken: whether a runtime has this id. 0, or -1 on error. */
int store_id_taken(struct store *s, int64_t id, bool *taken, struct ev_err *err);
enum store_conflict { STORE_NO_CONFLICT, STORE_NAME_TAKEN, STORE_ID_TAKEN };
/* Inserts rt's row in one transaction, with rt->id when it is positive (an id the client chose),
 * and sets rt->id and rt->created_at. 0 with *conflict STORE_NO_CONFLICT when the row is in;
 * 0 with *conflict naming what is taken when nothing was written (a conflict is an answer, not
 * a failure of the store); -1 on error. */
int store_commit(struct store *s, struct runtime *rt, enum store_conflict *conflict,
                 struct ev_err *err);
/* Removes a prepared directory that will not be committed. */
void store_discard(struct store *s, const char *dir);
/* 0 with *found (false: there was no runtime under id, nothing changed), or -1 on error. */
int store_delete(struct store *s, int64_t id, bool *found, struct ev_err *err);

/* A small key/value table for the server's own bookkeeping ("catalog_installed"). */
int store_get_flag(struct store *s, const char *key, bool *value, struct ev_err *err);
int store_set_flag(struct store *s, const char *key, struct ev_err *err);

#endif
