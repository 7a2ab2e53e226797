#include "pipeline/runtime_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/rmtree.h"

struct store {
    sqlite3 *db;
    pthread_mutex_t mu; /* one connection, used by one thread at a time */
    int rt_fd;          /* the runtimes directory */
    char rt_dir[300];
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS runtimes ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " provider TEXT NOT NULL,"
    " source_file_name TEXT NOT NULL,"
    " compile_script TEXT NOT NULL,"
    " run_script TEXT NOT NULL,"
    " nix_shell TEXT NOT NULL,"
    " env BLOB NOT NULL,"
    " dir TEXT NOT NULL UNIQUE);"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/* Columns added after the first schema: a database created by an earlier version gets them
 * at open (ALTER TABLE ADD COLUMN, with the default older rows take). Limits are stored as
 * seven comma-separated values in the units of struct ev_limits (microseconds, kilobytes,
 * counts), in the order of enum limit_index, empty when the runtime does not set that limit. */
static const struct {
    const char *name, *decl;
} added_columns[] = {
    {"compile_limits", "TEXT NOT NULL DEFAULT ''"},
    {"run_limits", "TEXT NOT NULL DEFAULT ''"},
    {"created_at", "INTEGER NOT NULL DEFAULT 0"},
};

static int column_exists(sqlite3 *db, const char *table, const char *column)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "PRAGMA table_info(%s)", table);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int found = 0, r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *n = sqlite3_column_text(st, 1);
        if (n && strcmp((const char *)n, column) == 0)
            found = 1;
    }
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? found : -1;
}

static int exec_sql(struct store *s, const char *sql, struct ev_err *err);

static int migrate(struct store *s, struct ev_err *err)
{
    for (size_t i = 0; i < sizeof(added_columns) / sizeof(added_columns[0]); i++) {
        int r = column_exists(s->db, "runtimes", added_columns[i].name);
        if (r < 0)
            return ev_fail(err, 0, "database: read the columns of runtimes: %s",
                           sqlite3_errmsg(s->db));
        if (r)
            continue;
        char sql[256];
        snprintf(sql, sizeof(sql), "ALTER TABLE runtimes ADD COLUMN %s %s", added_columns[i].name,
                 added_columns[i].decl);
        if (exec_sql(s, sql, err) < 0)
            return -1;
    }
    return 0;
}

static void override_text(const struct limit_override *o, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < LIM_COUNT; i++) {
        if (o->present[i])
            n += (size_t)snprintf(buf + n, size - n, "%llu", (unsigned long long)o->value[i]);
        if (i + 1 < LIM_COUNT)
            n += (size_t)snprintf(buf + n, size - n, ",");
    }
}

static void override_parse(const char *text, struct limit_override *o)
{
    memset(o, 0, sizeof(*o));
    const char *p = text ? text : "";
    for (int i = 0; i < LIM_COUNT && *p; i++) {
        if (*p != ',') {
            char *end;
            unsigned long long v = strtoull(p, &end, 10);
            if (end != p) {
                o->present[i] = true;
                o->value[i] = v;
            }
            p = end;
        }
        if (*p == ',')
            p++;
    }
}

void runtime_free(struct runtime *rt)
{
    free(rt->name);
    free(rt->provider);
    free(rt->source_file_name);
    free(rt->compile_script);
    free(rt->run_script);
    free(rt->nix_shell);
    free(rt->env);
    memset(rt, 0, sizeof(*rt));
}

static int db_fail(struct store *s, struct ev_err *err, const char *what)
{
    return ev_fail(err, 0, "database: %s: %s", what, sqlite3_errmsg(s->db));
}

static int exec_sql(struct store *s, const char *sql, struct ev_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        ev_fail(err, 0, "database: %s: %s", sql, msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

struct store *store_open(const char *data_dir, struct ev_err *err)
{
    struct store *s = calloc(1, sizeof(*s));
    if (!s) {
        ev_fail(err, ENOMEM, "store");
        return NULL;
    }
    s->rt_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    snprintf(s->rt_dir, sizeof(s->rt_dir), "%s/runtimes", data_dir);
    if (make_dir(s->rt_dir, 0755, err) < 0)
        goto fail;
    s->rt_fd = open(s->rt_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s->rt_fd < 0) {
        ev_fail(err, errno, "open %s", s->rt_dir);
        goto fail;
    }
    char path[300];
    snprintf(path, sizeof(path), "%s/envicutor.db", data_dir);
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        ev_fail(err, 0, "open the database %s: %s", path,
                s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* WAL with synchronous=FULL: a committed runtime survives a crash of the machine too. */
    if (exec_sql(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err) < 0 ||
        exec_sql(s, schema, err) < 0 || migrate(s, err) < 0) {
        ev_wrap(err, "%s: ", path);
        goto fail;
    }
    return s;
fail:
    store_close(s);
    return NULL;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    if (s->db)
        sqlite3_close(s->db);
    if (s->rt_fd >= 0)
        close(s->rt_fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const char *store_runtimes_dir(const struct store *s)
{
    return s->rt_dir;
}

static int dir_referenced(struct store *s, const char *dir, bool *referenced, struct ev_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM runtimes WHERE dir = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return db_fail(s, err, "prepare");
    sqlite3_bind_text(st, 1, dir, -1, SQLITE_TRANSIENT);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r != SQLITE_ROW && r != SQLITE_DONE)
        return db_fail(s, err, "look a directory up");
    *referenced = r == SQLITE_ROW;
    return 0;
}

int store_sweep(struct store *s, struct ev_err *err)
{
    pthread_mutex_lock(&s->mu);
    /* a copy for fdopendir, close-on-exec: other threads may start processes meanwhile */
    int dfd = fcntl(s->rt_fd, F_DUPFD_CLOEXEC, 0);
    cleanup_closedir DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        pthread_mutex_unlock(&s->mu);
        return ev_fail(err, errno, "read %s", s->rt_dir);
    }
    rewinddir(d);
    int removed = 0;
    struct dirent *e;
    char names[256][64];
    int n = 0;
    /* collect first: removing while reading a directory may skip entries */
    while ((e = readdir(d)) != NULL && n < 256) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        bool referenced = true;
        if (dir_referenced(s, e->d_name, &referenced, err) < 0) {
            pthread_mutex_unlock(&s->mu);
            return -1;
        }
        if (!referenced && strlen(e->d_name) < 64)
            snprintf(names[n++], 64, "%s", e->d_name);
    }
    for (int i = 0; i < n; i++) {
        if (rmtree_at(s->rt_fd, names[i], err) < 0) {
            pthread_mutex_unlock(&s->mu);
            return -1;
        }
        removed++;
    }
    pthread_mutex_unlock(&s->mu);
    return removed;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

int store_list(struct store *s, struct runtime_summary **out, size_t *n, struct ev_err *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT id, name FROM runtimes ORDER BY id", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_fail(s, err, "list runtimes");
        goto out;
    }
    size_t cap = 0;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct runtime_summary *p = realloc(*out, cap * sizeof(**out));
            if (!p) {
                rc = ev_fail(err, ENOMEM, "list runtimes");
                break;
            }
            *out = p;
        }
        (*out)[*n].id = sqlite3_column_int64(st, 0);
        (*out)[*n].name = col_dup(st, 1);
        if (!(*out)[*n].name) {
            rc = ev_fail(err, ENOMEM, "list runtimes");
            break;
        }
        (*n)++;
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = db_fail(s, err, "list runtimes");
    sqlite3_finalize(st);
out:
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        store_list_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

void store_list_free(struct runtime_summary *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i].name);
    free(list);
}

int store_get(struct store *s, int64_t id, struct runtime *rt, bool *found, struct ev_err *err)
{
    memset(rt, 0, sizeof(*rt));
    *found = false;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, name, provider, source_file_name, compile_script, "
                           "run_script, nix_shell, env, dir, compile_limits, run_limits, "
                           "created_at FROM runtimes WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(s, err, "get a runtime");
        goto out;
    }
    sqlite3_bind_int64(st, 1, id);
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        rc = 0;
    } else if (r != SQLITE_ROW) {
        rc = db_fail(s, err, "get a runtime");
    } else {
        rt->id = sqlite3_column_int64(st, 0);
        rt->name = col_dup(st, 1);
        rt->provider = col_dup(st, 2);
        rt->source_file_name = col_dup(st, 3);
        rt->compile_script = col_dup(st, 4);
        rt->run_script = col_dup(st, 5);
        rt->nix_shell = col_dup(st, 6);
        int len = sqlite3_column_bytes(st, 7);
        const void *blob = sqlite3_column_blob(st, 7);
        rt->env = malloc((size_t)len + 1);
        if (rt->env) {
            if (len)
                memcpy(rt->env, blob, (size_t)len);
            rt->env[len] = '\0';
            rt->env_len = (size_t)len;
        }
        const unsigned char *dir = sqlite3_column_text(st, 8);
        snprintf(rt->dir, sizeof(rt->dir), "%s", dir ? (const char *)dir : "");
        override_parse((const char *)sqlite3_column_text(st, 9), &rt->compile_limits);
        override_parse((const char *)sqlite3_column_text(st, 10), &rt->run_limits);
        rt->created_at = sqlite3_column_int64(st, 11);
        rc = 0;
        if (!rt->name || !rt->provider || !rt->source_file_name || !rt->compile_script ||
            !rt->run_script || !rt->nix_shell || !rt->env) {
            runtime_free(rt);
            rc = ev_fail(err, ENOMEM, "get a runtime");
        } else {
            *found = true;
        }
    }
    sqlite3_finalize(st);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_is_installed(struct store *s, int64_t id, const char *dir, bool *installed,
                       struct ev_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM runtimes WHERE id = ? AND dir = ?", -1, &st,
                           NULL) != SQLITE_OK) {
        rc = db_fail(s, err, "look a runtime up");
    } else {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_text(st, 2, dir, -1, SQLITE_TRANSIENT);
        int r = sqlite3_step(st);
        rc = r == SQLITE_ROW || r == SQLITE_DONE ? 0 : db_fail(s, err, "look a runtime up");
        *installed = r == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_name_taken(struct store *s, const char *name, bool *taken, struct ev_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM runtimes WHERE name = ?", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_fail(s, err, "look a name up");
    } else {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        int r = sqlite3_step(st);
        rc = r == SQLITE_ROW || r == SQLITE_DONE ? 0 : db_fail(s, err, "look a name up");
        *taken = r == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_id_taken(struct store *s, int64_t id, bool *taken, struct ev_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM runtimes WHERE id = ?", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_fail(s, err, "look an id up");
    } else {
        sqlite3_bind_int64(st, 1, id);
        int r = sqlite3_step(st);
        rc = r == SQLITE_ROW || r == SQLITE_DONE ? 0 : db_fail(s, err, "look an id up");
        *taken = r == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int write_synced(int dfd, const char *name, const char *text, struct ev_err *err)
{
    cleanup_close int fd =
        openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return ev_fail(err, errno, "create %s", name);
    if (write_full(fd, text, strlen(text)) < 0 || fsync(fd) < 0)
        return ev_fail(err, errno, "write %s", name);
    return 0;
}

int store_prepare(struct store *s, struct runtime *rt, struct ev_err *err)
{
    unsigned char rnd[8];
    cleanup_close int dfd = -1;
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return ev_fail(err, errno, "getrandom");
    snprintf(rt->dir, sizeof(rt->dir), "rt-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    if (mkdirat(s->rt_fd, rt->dir, 0755) < 0)
        return ev_fail(err, errno, "mkdir %s/%s", s->rt_dir, rt->dir);
    /* mkdirat obeys the umask; the box's user must be able to read the scripts */
    if (fchmodat(s->rt_fd, rt->dir, 0755, 0) < 0) {
        ev_fail(err, errno, "chmod %s/%s", s->rt_dir, rt->dir);
        goto fail;
    }
    dfd = openat(s->rt_fd, rt->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        ev_fail(err, errno, "open %s/%s", s->rt_dir, rt->dir);
        goto fail;
    }
    if (write_synced(dfd, "compile.sh", rt->compile_script, err) < 0 ||
        write_synced(dfd, "run.sh", rt->run_script, err) < 0 ||
        /* a Nix runtime's shell.nix, as the client sent it; the helper runs nix-shell on it */
        (rt->provider && strcmp(rt->provider, "nix") == 0 &&
         write_synced(dfd, "shell.nix", rt->nix_shell, err) < 0))
        goto fail;
    if (fchmodat(dfd, "compile.sh", 0644, 0) < 0 || fchmodat(dfd, "run.sh", 0644, 0) < 0 ||
        fsync(dfd) < 0 || fsync(s->rt_fd) < 0) {
        ev_fail(err, errno, "sync %s/%s", s->rt_dir, rt->dir);
        goto fail;
    }
    return 0;
fail:
    store_discard(s, rt->dir);
    return -1;
}

void store_discard(struct store *s, const char *dir)
{
    struct ev_err e;
    if (rmtree_at(s->rt_fd, dir, &e) < 0)
        fprintf(stderr, "envicutor: remove %s/%s: %s\n", s->rt_dir, dir, e.msg);
}

int store_commit(struct store *s, struct runtime *rt, enum store_conflict *conflict,
                 struct ev_err *err)
{
    *conflict = STORE_NO_CONFLICT;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO runtimes (name, provider, source_file_name, "
                           "compile_script, run_script, nix_shell, env, dir, compile_limits, "
                           "run_limits, created_at, id) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(s, err, "add a runtime");
        goto out;
    }
    sqlite3_bind_text(st, 1, rt->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, rt->provider, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, rt->source_file_name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, rt->compile_script, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, rt->run_script, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, rt->nix_shell ? rt->nix_shell : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 7, rt->env ? rt->env : "", (int)rt->env_len, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, rt->dir, -1, SQLITE_TRANSIENT);
    char cl[200], rl[200];
    override_text(&rt->compile_limits, cl, sizeof(cl));
    override_text(&rt->run_limits, rl, sizeof(rl));
    sqlite3_bind_text(st, 9, cl, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 10, rl, -1, SQLITE_TRANSIENT);
    int64_t now = (int64_t)time(NULL);
    sqlite3_bind_int64(st, 11, now);
    if (rt->id > 0)
        sqlite3_bind_int64(st, 12, rt->id);
    else
        sqlite3_bind_null(st, 12); /* NULL: the next id (AUTOINCREMENT) */
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        rt->id = sqlite3_last_insert_rowid(s->db);
        rt->created_at = now;
        rc = 0;
    } else if (r == SQLITE_CONSTRAINT) {
        /* the id is the primary key; the other unique columns are the name and the directory,
         * whose name is fresh and random */
        *conflict = sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_PRIMARYKEY
                        ? STORE_ID_TAKEN
                        : STORE_NAME_TAKEN;
        rc = 0;
    } else {
        rc = db_fail(s, err, "add a runtime");
    }
    sqlite3_finalize(st);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_delete(struct store *s, int64_t id, bool *found, struct ev_err *err)
{
    struct runtime rt;
    if (store_get(s, id, &rt, found, err) < 0)
        return -1;
    if (!*found)
        return 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM runtimes WHERE id = ?", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_fail(s, err, "delete a runtime");
    } else {
        sqlite3_bind_int64(st, 1, id);
        int x = sqlite3_step(st);
        rc = x == SQLITE_DONE ? 0 : db_fail(s, err, "delete a runtime");
        /* gone meanwhile: not found, as if store_get had not seen it */
        if (rc == 0 && sqlite3_changes(s->db) == 0)
            *found = false;
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    /* The row is gone for good; a crash before this line leaves an orphan the next start
     * removes. */
    if (rc == 0 && *found)
        store_discard(s, rt.dir);
    runtime_free(&rt);
    return rc;
}

int store_get_flag(struct store *s, const char *key, bool *value, struct ev_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM meta WHERE key = ?", -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(s, err, "read a flag");
    } else {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW || r == SQLITE_DONE)
            *value = r == SQLITE_ROW;
        else
            rc = db_fail(s, err, "read a flag");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_set_flag(struct store *s, const char *key, struct ev_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int rc = 0;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", -1,
                           &st, NULL) != SQLITE_OK) {
        rc = db_fail(s, err, "set a flag");
    } else {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_fail(s, err, "set a flag");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
