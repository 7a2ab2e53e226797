/* SQLite, loaded on first use (common/lazylib.h): the runtime store and the results of
 * asynchronous submissions. */
#include <sqlite3.h>

#include "common/lazylib.h"

#define FUNCTIONS(F, V, N)                                                                         \
    F(int, sqlite3_open_v2, (const char *f, sqlite3 **db, int flags, const char *vfs),             \
      (f, db, flags, vfs))                                                                         \
    F(int, sqlite3_close, (sqlite3 * db), (db))                                                    \
    F(int, sqlite3_busy_timeout, (sqlite3 * db, int ms), (db, ms))                                 \
    F(int, sqlite3_exec,                                                                           \
      (sqlite3 * db, const char *sql, int (*cb)(void *, int, char **, char **), void *arg,         \
       char **errmsg),                                                                             \
      (db, sql, cb, arg, errmsg))                                                                  \
    F(int, sqlite3_prepare_v2,                                                                     \
      (sqlite3 * db, const char *sql, int n, sqlite3_stmt **st, const char **tail),                \
      (db, sql, n, st, tail))                                                                      \
    F(int, sqlite3_step, (sqlite3_stmt * st), (st))                                                \
    F(int, sqlite3_finalize, (sqlite3_stmt * st), (st))                                            \
    F(int, sqlite3_bind_blob, (sqlite3_stmt * st, int i, const void *v, int n, void (*d)(void *)), \
      (st, i, v, n, d))                                                                            \
    F(int, sqlite3_bind_int64, (sqlite3_stmt * st, int i, sqlite3_int64 v), (st, i, v))            \
    F(int, sqlite3_bind_null, (sqlite3_stmt * st, int i), (st, i))                                 \
    F(int, sqlite3_bind_text, (sqlite3_stmt * st, int i, const char *v, int n, void (*d)(void *)), \
      (st, i, v, n, d))                                                                            \
    F(const void *, sqlite3_column_blob, (sqlite3_stmt * st, int i), (st, i))                      \
    F(int, sqlite3_column_bytes, (sqlite3_stmt * st, int i), (st, i))                              \
    F(int, sqlite3_column_int, (sqlite3_stmt * st, int i), (st, i))                                \
    F(sqlite3_int64, sqlite3_column_int64, (sqlite3_stmt * st, int i), (st, i))                    \
    F(const unsigned char *, sqlite3_column_text, (sqlite3_stmt * st, int i), (st, i))             \
    F(int, sqlite3_changes, (sqlite3 * db), (db))                                                  \
    F(sqlite3_int64, sqlite3_last_insert_rowid, (sqlite3 * db), (db))                              \
    F(const char *, sqlite3_errmsg, (sqlite3 * db), (db))                                          \
    F(int, sqlite3_extended_errcode, (sqlite3 * db), (db))                                         \
    V(sqlite3_free, (void *p), (p))

LAZY_LIBRARY("libsqlite3.so.0", FUNCTIONS)

int sqlite_load(struct ev_err *err)
{
    return lazy_lib_load(&lazy_this, err);
}
