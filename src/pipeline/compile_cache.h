/* The compile cache (SPEC §8): the results of compiles that ran to an exit, and the box's
 * files after them, kept under the data directory so that an identical compile is not run
 * again. Storage and bookkeeping only: what a key is made of and how files get into and out of
 * a box is the pipeline's (pipeline.c, stage_build).
 *
 * Layout: DATA/compile-cache/RUNTIME_DIR/KEY, one read-only file per entry, grouped by the
 * directory name of the runtime (drawn afresh for every installation), so that deleting a
 * runtime drops its group at once. An entry is written to a temporary file in its group, synced,
 * then renamed over its name: a crash leaves either no entry or a whole one, plus temporary
 * files that the next start removes. Every entry ends with the SHA-256 of what precedes it and
 * is checked when it is read: a damaged entry is a miss and is removed.
 *
 * Bounded in bytes, least recently used first out; the order survives restarts through the
 * entries' modification times (a hit touches its entry). */
#ifndef ENVICUTOR_COMPILE_CACHE_H
#define ENVICUTOR_COMPILE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "sandbox/result.h"

#define CCACHE_KEY_LEN 64 /* hexadecimal SHA-256 */

struct ccache;

/* What one entry holds: the extract stage's result (projects), the compile stage's, and the
 * box's files after the compile as a tar archive (empty when the compile failed: nothing runs
 * after it). */
struct ccache_entry {
    bool has_extract;
    struct sbx_result extract, compile;
    char *archive;
    size_t archive_len;
};
void ccache_entry_free(struct ccache_entry *e);

/* Opens (creating) data_dir/compile-cache, bounded by max_bytes (> 0). Removes what a crash
 * left (temporary files), the groups whose runtime directory no longer exists under
 * runtimes_dir, and the least recently used entries beyond the bound. */
struct ccache *ccache_open(const char *data_dir, const char *runtimes_dir, uint64_t max_bytes,
                           struct ev_err *err);
void ccache_close(struct ccache *c);

/* Looks key up in runtime's group: 0 with *found and e filled when it is found and whole; a
 * damaged entry is removed and reported as not found. -1 on error. */
int ccache_get(struct ccache *c, const char *runtime, const char *key, struct ccache_entry *e,
               bool *found, struct ev_err *err);
/* Stores e under key in runtime's group, evicting the least recently used entries to make room;
 * an entry larger than the whole bound is not stored (0). -1 on error. */
int ccache_put(struct ccache *c, const char *runtime, const char *key, const struct ccache_entry *e,
               struct ev_err *err);
/* Removes runtime's group (its runtime was deleted). */
int ccache_drop_runtime(struct ccache *c, const char *runtime, struct ev_err *err);

/* The bytes the entries take (for tests and reports). */
uint64_t ccache_used(struct ccache *c);

#endif
