/* The runtime catalog: runtimes/catalog/<language>.json in the repository, each a host runtime
 * with the commands it needs and a sample program. On first start the server installs the
 * entries whose commands exist on the host. */
#ifndef ENVICUTOR_CATALOG_H
#define ENVICUTOR_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "pipeline/pipeline.h"
#include "pipeline/runtime_store.h"

struct catalog_entry {
    char file[128];
    struct runtime rt;
    bool available; /* every required command exists on the host */
    char missing[64];
};

/* Reads every *.json of dir, sorted by file name. A missing directory is an empty catalog. */
int catalog_load(const char *dir, struct catalog_entry **out, size_t *n, struct ev_err *err);
void catalog_free(struct catalog_entry *entries, size_t n);

/* Installs the available entries (once per data directory: a flag in the store remembers it,
 * so a runtime the deployer deleted is not brought back). Returns how many were installed. */
int catalog_install(struct pipeline *p, struct catalog_entry *entries, size_t n,
                    struct ev_err *err);

#endif
