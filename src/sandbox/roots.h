/* Prepared roots, one per box number, built on a box's first run and kept until the host is
 * freed, or built again when what they were made from (/etc's entries, /usr, dpkg's status)
 * has changed (see mounts.h for what a prepared root holds). A box's runs never overlap (its lock),
 * and the tree is read-only and shared with no other box, so nothing of one run reaches the
 * next through it. */
#ifndef ENVICUTOR_ROOTS_H
#define ENVICUTOR_ROOTS_H

#include <stdbool.h>

#include "sandbox/sandbox.h"

#define ROOTS_MAX_POINTS 4
#define ROOTS_MAX 64 /* prepared roots kept at most; boxes beyond build their tree per run */

struct prepared_roots;

/* `points`: absolute mount targets the trees have a mount point for (NULL-terminated, at most
 * ROOTS_MAX_POINTS, each valid for mounts_check_target). */
int roots_new(struct prepared_roots **roots, const char *const *points, struct ev_err *err);
void roots_free(struct prepared_roots *roots);

/* Whether a run with these extra mounts can use a prepared root. */
bool roots_fit(const struct prepared_roots *roots, const struct sbx_mount *mounts, size_t n);

/* The template of the box's prepared root, built now if it is the box's first run or if its
 * sources changed since it was built (the old one is closed: call before each run); the
 * descriptor stays the cache's. -1 with err when the build failed; -2 when ROOTS_MAX roots
 * exist already (the run then builds its own tree). Called only by the box's holder. */
int roots_get(struct sbx_host *host, const struct sbx_box *box, struct ev_err *err);

#endif
