/* Boxes: a uid/gid from the reserved range, a lock that proves ownership, and the directory
 * that becomes /box.
 *
 * The lock is an flock on lock_dir/N (global to the host), held for the box's life. The kernel
 * drops it when the owner dies, even by kill -9, so the next owner of N knows the box may hold
 * residue and cleans it (cgroups, the tmpfs mount, the directory) before use. Two live boxes
 * therefore never share a uid, across any number of servers and `envicutor sandbox` commands. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/rmtree.h"
#include "sandbox/roots.h"
#include "sandbox/sandbox.h"

static int clean_residue(struct sbx_host *host, int id, struct ev_err *err)
{
    char name[32], boxes[320];
    snprintf(name, sizeof(name), "box-%d", id);
    if (cg_remove_stale(&host->cg, name, err) < 0)
        return -1;
    snprintf(boxes, sizeof(boxes), "%s/boxes", host->run_dir);
    cleanup_close int bfd = open(boxes, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0)
        return ev_fail(err, errno, "open %s", boxes);
    snprintf(name, sizeof(name), "%d", id);
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", boxes, name);
    /* A killed owner may have left its tmpfs mounted (possibly more than once). */
    for (int i = 0; i < 16 && umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) == 0; i++)
        ;
    return rmtree_at(bfd, name, err);
}

static int try_lock(struct sbx_host *host, int id)
{
    char path[320];
    snprintf(path, sizeof(path), "%s/%d", host->lock_dir, id);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int setup_dir(struct sbx_host *host, const struct sbx_box_options *opt, struct sbx_box *box,
                     struct ev_err *err)
{
    /* an external directory's own size is the caller's business; these bound a fresh run's
     * layer over it */
    box->disk_kb = opt && opt->disk_kb ? opt->disk_kb : 262144;
    box->max_inodes = opt && opt->max_inodes ? opt->max_inodes : 16384;
    if (opt && opt->external_dir) {
        cleanup_close int fd =
            open(opt->external_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return ev_fail(err, errno, "box directory %s", opt->external_dir);
        /* Resolved before anything changes: a path that does not fit is refused whole. */
        cleanup_free char *real = realpath(opt->external_dir, NULL);
        if (!real)
            return ev_fail(err, errno, "realpath %s", opt->external_dir);
        if (strlen(real) >= sizeof(box->dir))
            return ev_fail(err, 0, "box directory %.64s... is longer than %zu bytes", real,
                           sizeof(box->dir) - 1);
        if (fchown(fd, box->uid, box->gid) < 0 || fchmod(fd, 0755) < 0)
            return ev_fail(err, errno, "chown box directory %s", opt->external_dir);
        memcpy(box->dir, real, strlen(real) + 1);
        box->own_tmpfs = false;
        return 0;
    }
    snprintf(box->dir, sizeof(box->dir), "%s/boxes/%d", host->run_dir, box->id);
    if (mkdir(box->dir, 0700) < 0)
        return ev_fail(err, errno, "mkdir %s", box->dir);
    /* A tmpfs of its own bounds the box's total disk usage and inode count, and its removal
     * is one unmount that cannot be misled by anything the program left inside. */
    char opts[160];
    snprintf(opts, sizeof(opts), "size=%lluk,nr_inodes=%llu,mode=0755,uid=%u,gid=%u",
             (unsigned long long)box->disk_kb, (unsigned long long)box->max_inodes,
             (unsigned)box->uid, (unsigned)box->gid);
    if (mount("tmpfs", box->dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
        int e = errno;
        rmdir(box->dir);
        return ev_fail(err, e, "mount tmpfs on %s (%s)", box->dir, opts);
    }
    box->own_tmpfs = true;
    return 0;
}

/* Takes box id when its lock is free and it can be made ready; 1 when its lock is held. */
static int take_box(struct sbx_host *host, const struct sbx_box_options *opt, int id,
                    struct sbx_box *box, bool *unclean, struct ev_err *err)
{
    int fd = try_lock(host, id);
    if (fd < 0)
        return 1;
    box->id = id;
    box->lock_fd = fd;
    box->uid = host->first_uid + (uid_t)id;
    box->gid = (gid_t)box->uid;
    *unclean = clean_residue(host, id, err) < 0;
    if (*unclean || setup_dir(host, opt, box, err) < 0) {
        ev_wrap(err, "box %d: ", id);
        close(fd);
        box->lock_fd = -1;
        return -1;
    }
    return 0;
}

/* A failure that does not stop the call, for the program's log (sbx_host_config.log). */
__attribute__((format(printf, 2, 3))) static void box_log(const struct sbx_host *host,
                                                          const char *fmt, ...)
{
    if (!host->log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    host->log(host->log_ctx, line);
}

int sbx_box_open(struct sbx_host *host, const struct sbx_box_options *opt, struct sbx_box *box,
                 struct ev_err *err)
{
    memset(box, 0, sizeof(*box));
    box->lock_fd = -1;
    unsigned n = host->n_boxes;
    /* Each search starts one box further on, among the first ROOTS_MAX boxes when roots are
     * prepared: only that many boxes keep one, and a search rotating over all of them gave
     * nearly every submission a box without its prepared root, whose runs then built their
     * tree each time (docs/performance.md). The search itself still goes over every box. */
    unsigned window = host->roots && n > ROOTS_MAX ? ROOTS_MAX : n;
    unsigned start = __atomic_fetch_add(&host->next_box, 1, __ATOMIC_RELAXED) % window;
    /* A box whose leftovers cannot be cleaned (a cgroup that will not go, a mount that stays)
     * must not stop every submission: it is passed over and remembered, so that each search
     * does not spend its clean-up's retries on it again. It is tried again only when no other
     * box is free, since whatever held it may be gone by then. */
    bool skipped = false;
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < n; i++) {
            int id = (int)((start + i) % n);
            bool bad = host->box_bad && __atomic_load_n(&host->box_bad[id], __ATOMIC_RELAXED);
            if (bad != (pass == 1))
                continue;
            bool unclean = false;
            int r = take_box(host, opt, id, box, &unclean, err);
            if (r == 0) {
                if (bad)
                    __atomic_store_n(&host->box_bad[id], 0, __ATOMIC_RELAXED);
                return 0;
            }
            if (r > 0)
                continue;
            if (!unclean) /* the box directory the caller asked for: no other box would do */
                return -1;
            box_log(host, "skipping %s", err->msg);
            __atomic_fetch_add(&host->boxes_skipped, 1, __ATOMIC_RELAXED);
            if (host->box_bad)
                __atomic_store_n(&host->box_bad[id], 1, __ATOMIC_RELAXED);
            skipped = true;
        }
    }
    if (skipped)
        return ev_wrap(err, "no box is free but boxes whose leftovers cannot be cleaned; the "
                            "last: ");
    return ev_fail(err, EAGAIN, "all %u boxes are in use", n);
}

unsigned long sbx_boxes_skipped(const struct sbx_host *host)
{
    return __atomic_load_n(&host->boxes_skipped, __ATOMIC_RELAXED);
}

void sbx_box_close(struct sbx_host *host, struct sbx_box *box)
{
    if (box->lock_fd < 0)
        return;
    if (box->own_tmpfs) {
        if (umount2(box->dir, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
            box_log(host, "unmount %s: %s", box->dir, strerror(errno));
        else if (rmdir(box->dir) < 0)
            box_log(host, "rmdir %s: %s", box->dir, strerror(errno));
    }
    close(box->lock_fd);
    box->lock_fd = -1;
}

int sbx_cleanup_stale(struct sbx_host *host, struct ev_err *err)
{
    /* Only boxes that were ever used have a lock file. */
    char locks[320];
    snprintf(locks, sizeof(locks), "%s", host->lock_dir);
    cleanup_closedir DIR *d = opendir(locks);
    if (!d)
        return ev_fail(err, errno, "opendir %s", locks);
    int cleaned = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t id;
        if (parse_u64(de->d_name, &id) < 0 || id >= host->n_boxes)
            continue;
        int fd = try_lock(host, (int)id);
        if (fd < 0)
            continue; /* held by a live owner */
        int r = clean_residue(host, (int)id, err);
        close(fd);
        if (r < 0)
            return ev_wrap(err, "box %llu: ", (unsigned long long)id);
        cleaned++;
    }
    return cleaned;
}
