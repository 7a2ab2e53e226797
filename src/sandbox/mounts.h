/* The box's file system view, built inside the child's new mount namespace. */
#ifndef ENVICUTOR_MOUNTS_H
#define ENVICUTOR_MOUNTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "sandbox/sandbox.h"

struct root_plan {
    const struct sbx_host *host;
    const char *box_dir; /* host path bound read-write at /box */
    uid_t uid;
    gid_t gid;
    uint64_t tmp_kb;
    const struct sbx_mount *mounts;
    size_t n_mounts;
    /* A fresh-box run (sandbox.h): box_dir is the lower layer of an overlay at /box whose
     * upper layer is a tmpfs of box_kb and box_inodes, and the files are copied into it. */
    bool fresh_box;
    uint64_t box_kb, box_inodes;
    const struct sbx_file *files;
    size_t n_files;
};

/* Finds, once, which /etc entries and top-level links the box gets. */
int mounts_scan_host(struct sbx_host *host, struct ev_err *err);

/* Validates a caller's extra mount target: absolute, normalised, and not inside a place the
 * sandbox itself builds. */
int mounts_check_target(const char *target, struct ev_err *err);

/* Runs in the child, as root in its new mount namespace: builds the tree on a tmpfs, switches
 * the root to it with pivot_root and detaches the host's. Allocates no memory. */
int mounts_build_root(const struct root_plan *p, struct ev_err *err);

/* Prepared roots. A box's read-only tree (/usr, /etc with the box's own passwd and group, its
 * own /dev nodes, the mount points) is the same for every run in that box, so it can be built
 * once, in a mount namespace of its own that then serves as a template: each run enters a
 * private copy of it and adds only what is its own (/proc, /tmp, /box, extra binds). */

/* Runs in a child in a new mount namespace: builds the template tree, with a mount point for
 * each of p->mounts' targets (nothing is bound there), and makes it the root. */
int mounts_build_template(const struct root_plan *p, struct ev_err *err);

/* Runs in the box's init instead of mounts_build_root: enters a private copy of the template
 * and mounts this run's /proc, /tmp, /box and extra binds (targets among the template's mount
 * points). Needs Linux >= 5.12 (open_tree, move_mount, mount_setattr). Allocates nothing. */
int mounts_enter_template(const struct root_plan *p, int template_fd, struct ev_err *err);

#endif
