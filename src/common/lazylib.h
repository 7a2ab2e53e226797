/* Shared libraries loaded when first used rather than when the binary starts.
 *
 * Only `envicutor serve` and `envicutor worker` use libmicrohttpd, SQLite, hiredis and wslay;
 * `envicutor sandbox`, a one-shot command whose start is part of every run it makes, uses
 * none of them. A library the binary is linked against is loaded, relocated and initialised
 * at every start of the binary (libmicrohttpd with GnuTLS and its dependencies some 3 ms,
 * SQLite, hiredis and wslay together 1.5-2 ms more on the development machine: docs/
 * performance.md). So the binary is not linked against them: each has a file (src/http/
 * mhd_loader.c, src/common/lib_*.c) that defines the functions the project calls, and each
 * definition resolves the real one with dlopen/dlsym on first use and calls it. The headers
 * are the libraries' own, so a definition that does not match its declaration does not
 * compile. A function of one of them called anywhere new needs a line in its file, or the
 * link fails.
 *
 * A library file lists its functions once:
 *
 *     #define FUNCTIONS(F, V, N)                                  \
 *         F(int, lib_open, (const char *path, int flags), (path, flags)) \
 *         V(lib_close, (struct lib *l), (l))                      \
 *         N(lib_printf)
 *     LAZY_LIBRARY("libfoo.so.1", FUNCTIONS)
 *
 * F for a function that returns a value, V for one that returns nothing, N for one whose
 * definition the file writes itself (a variadic one) with LAZY_FN. */
#ifndef ENVICUTOR_LAZYLIB_H
#define ENVICUTOR_LAZYLIB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

struct lazy_lib {
    const char *soname;
    const char *const *names; /* of the functions, in the order of fns */
    void **fns;
    size_t n;
    pthread_mutex_t mu;
    atomic_bool tried;
    char error[256]; /* empty: every function was found */
};

/* Loads the library and finds every function, once; -1 with the reason when the library or
 * a function is missing. */
int lazy_lib_load(struct lazy_lib *l, struct ev_err *err);
/* The same for a call of one of its functions: without the library the process cannot go on,
 * so it aborts with the reason (a server checks with lazy_lib_load at start). */
void lazy_lib_need(struct lazy_lib *l);

#define LAZY_ENUM_F(ret, name, params, args) lazy_i_##name,
#define LAZY_ENUM_V(name, params, args) lazy_i_##name,
#define LAZY_ENUM_N(name) lazy_i_##name,
#define LAZY_NAME_F(ret, name, params, args) #name,
#define LAZY_NAME_V(name, params, args) #name,
#define LAZY_NAME_N(name) #name,
#define LAZY_DEF_F(ret, name, params, args)                                                        \
    ret name params                                                                                \
    {                                                                                              \
        lazy_lib_need(&lazy_this);                                                                 \
        return ((ret(*) params)lazy_fns[lazy_i_##name])args;                                       \
    }
#define LAZY_DEF_V(name, params, args)                                                             \
    void name params                                                                               \
    {                                                                                              \
        lazy_lib_need(&lazy_this);                                                                 \
        ((void(*) params)lazy_fns[lazy_i_##name]) args;                                            \
    }
#define LAZY_DEF_N(name)

/* The real function `name`, as a pointer of type `type`, for a definition written by hand. */
#define LAZY_FN(type, name) (lazy_lib_need(&lazy_this), (type)lazy_fns[lazy_i_##name])

#define LAZY_LIBRARY(soname, FUNCTIONS)                                                            \
    enum { FUNCTIONS(LAZY_ENUM_F, LAZY_ENUM_V, LAZY_ENUM_N) lazy_count };                          \
    static const char *const lazy_names[] = {FUNCTIONS(LAZY_NAME_F, LAZY_NAME_V, LAZY_NAME_N)};    \
    static void *lazy_fns[lazy_count];                                                             \
    static struct lazy_lib lazy_this = {                                                           \
        soname, lazy_names, lazy_fns, lazy_count, PTHREAD_MUTEX_INITIALIZER, false, ""};           \
    FUNCTIONS(LAZY_DEF_F, LAZY_DEF_V, LAZY_DEF_N)

/* What a server checks at start, to report a missing library clearly rather than abort on
 * its first call. */
int sqlite_load(struct ev_err *err);
int hiredis_load(struct ev_err *err);
int wslay_load(struct ev_err *err);

#endif
