#include "common/lazylib.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static void load(struct lazy_lib *l)
{
    void *lib = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(l->error, sizeof(l->error), "%s", e ? e : "cannot be loaded");
        return;
    }
    for (size_t i = 0; i < l->n; i++) {
        l->fns[i] = dlsym(lib, l->names[i]);
        if (!l->fns[i] && !l->error[0])
            snprintf(l->error, sizeof(l->error), "%s: no function %s", l->soname, l->names[i]);
    }
}

static const char *loaded(struct lazy_lib *l)
{
    if (!atomic_load_explicit(&l->tried, memory_order_acquire)) {
        pthread_mutex_lock(&l->mu);
        if (!atomic_load_explicit(&l->tried, memory_order_relaxed)) {
            load(l);
            atomic_store_explicit(&l->tried, true, memory_order_release);
        }
        pthread_mutex_unlock(&l->mu);
    }
    return l->error[0] ? l->error : NULL;
}

int lazy_lib_load(struct lazy_lib *l, struct ev_err *err)
{
    const char *e = loaded(l);
    return e ? ev_fail(err, 0, "%s", e) : 0;
}

void lazy_lib_need(struct lazy_lib *l)
{
    const char *e = loaded(l);
    if (e) {
        fprintf(stderr, "envicutor: %s\n", e);
        abort();
    }
}
