/* The runtime catalog: runtimes/catalog/<language>.json in the repository, each a host runtime
 * with the commands it needs, its own limits and a sample program (docs/catalog.md). On first
 * start the server installs the entries whose commands exist on the host; `envicutor catalog
 * check` validates a catalog and runs every sample. */
#ifndef ENVICUTOR_CATALOG_H
#define ENVICUTOR_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "pipeline/pipeline.h"
#include "pipeline/runtime_store.h"

#define CATALOG_MAX_ENTRIES 256
/* POST /runtimes refuses a longer script (src/http/request.c); the catalog holds entries to the
 * same bound, or one would be installed at the server's start and refused by `catalog check
 * --server`. */
#define CATALOG_SCRIPT_MAX_BYTES 16384

struct catalog_sample {
    char *source_code, *input, *expected_output;
};

struct catalog_entry {
    char file[128];
    struct runtime rt; /* compile_limits and run_limits in the server's units */
    struct catalog_sample sample;
    bool available; /* every required command exists on the host */
    char missing[64];
};

/* Reads and validates dir/file: every field's type and value (unknown fields are errors too),
 * so that a mistake is reported as "FILE: field 'run_limits.memory': ..." when the catalog is
 * read, not found later as a runtime that behaves oddly. */
int catalog_load_entry(const char *dir, const char *file, struct catalog_entry *e,
                       struct ev_err *err);
void catalog_entry_free(struct catalog_entry *e);

/* The *.json file names of dir, sorted; a missing directory has none. */
int catalog_list(const char *dir, char ***names, size_t *n, struct ev_err *err);
void catalog_list_free(char **names, size_t n);

/* Reads every *.json of dir, sorted by file name; the first invalid entry fails the whole
 * catalog. A missing directory is an empty catalog. */
int catalog_load(const char *dir, struct catalog_entry **out, size_t *n, struct ev_err *err);
void catalog_free(struct catalog_entry *entries, size_t n);

/* Installs the available entries (once per data directory: a flag in the store remembers it,
 * so a runtime the deployer deleted is not brought back). Returns how many were installed. */
int catalog_install(struct pipeline *p, struct catalog_entry *entries, size_t n,
                    struct ev_err *err);

#endif
