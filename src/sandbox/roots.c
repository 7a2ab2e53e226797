#include "sandbox/roots.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "sandbox/mounts.h"

struct prepared_roots {
    pthread_mutex_t mu;
    struct {
        int box_id;
        int fd;
        uint64_t stamp; /* sources_stamp() when it was built */
    } roots[ROOTS_MAX];
    unsigned n;
    char points[ROOTS_MAX_POINTS][204];
    struct sbx_mount point_mounts[ROOTS_MAX_POINTS];
    unsigned n_points;
};

int roots_new(struct prepared_roots **out, const char *const *points, struct ev_err *err)
{
    *out = NULL;
    struct prepared_roots *r = calloc(1, sizeof(*r));
    if (!r)
        return ev_fail(err, ENOMEM, "prepared roots");
    for (; points && points[r->n_points]; r->n_points++) {
        if (r->n_points == ROOTS_MAX_POINTS) {
            free(r);
            return ev_fail(err, 0, "at most %d mount points in a prepared root", ROOTS_MAX_POINTS);
        }
        if (mounts_check_target(points[r->n_points], err) < 0) {
            free(r);
            return -1;
        }
        snprintf(r->points[r->n_points], sizeof(r->points[0]), "%s", points[r->n_points]);
        r->point_mounts[r->n_points].target = r->points[r->n_points];
    }
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

void roots_free(struct prepared_roots *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->n; i++)
        close(r->roots[i].fd);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

bool roots_fit(const struct prepared_roots *r, const struct sbx_mount *mounts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (unsigned j = 0; j < r->n_points && !found; j++)
            found = strcmp(mounts[i].target, r->points[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* Where a prepared root may go stale. Its /etc entries and its /usr are overlays made once
 * (overlayfs keeps serving a file that was replaced by rename in the tree below it), so an
 * ldconfig, a tzdata or a package upgrade would not reach the boxes. ldconfig and tzdata
 * replace files by rename, which changes the entry's inode and /etc's times; a dpkg run
 * rewrites its status file by rename. These few stats, made before each run of a box with a
 * prepared root, tell when its root must be built again. */
static const char *const usr_sources[] = {"/usr",     "/usr/bin",     "/usr/sbin",
                                          "/usr/lib", "/usr/libexec", "/var/lib/dpkg/status"};

static uint64_t mix(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull; /* FNV-1a */
    return h;
}

static uint64_t stamp_of(uint64_t h, int dirfd, const char *path)
{
    struct stat st;
    if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int e = errno;
        return mix(h, &e, sizeof(e));
    }
    uint64_t f[] = {st.st_dev,          st.st_ino,         (uint64_t)st.st_size, st.st_mtim.tv_sec,
                    st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec,   st.st_mode};
    return mix(h, f, sizeof(f));
}

static uint64_t sources_stamp(const struct sbx_host *h)
{
    uint64_t stamp = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof(usr_sources) / sizeof(usr_sources[0]); i++)
        stamp = stamp_of(stamp, AT_FDCWD, usr_sources[i]);
    int etc = open(h->etc_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (etc < 0) {
        int e = errno;
        return mix(stamp, &e, sizeof(e));
    }
    stamp = stamp_of(stamp, etc, ".");
    for (unsigned i = 0; i < h->n_etc; i++)
        stamp = stamp_of(stamp, etc, h->etc_names[i]);
    close(etc);
    return stamp;
}

struct build_report {
    int ok;
    char msg[400];
};

/* The child that builds the tree in a mount namespace of its own, then waits to be killed
 * once its namespace is held by a descriptor. Cloned from a possibly multi-threaded process:
 * system calls and stack buffers only. */
static __attribute__((noreturn)) void builder(const struct root_plan *plan, int report_w)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        _exit(127); /* seen by the caller as a builder that failed without a report */
    /* the caller's other descriptors (other runs' pipes among them) are not ours to hold */
    if (dup2(report_w, 3) < 0)
        _exit(127);
    syscall(SYS_close_range, 4, ~0u, 0);
    struct build_report rep = {.ok = 1};
    struct ev_err e = {0};
    if (mounts_build_template(plan, &e) < 0) {
        rep.ok = 0;
        snprintf(rep.msg, sizeof(rep.msg), "%s", e.msg);
        write_full(3, &rep, sizeof(rep));
        _exit(1);
    }
    write_full(3, &rep, sizeof(rep));
    for (;;)
        pause();
}

static int build(struct sbx_host *host, const struct sbx_box *box, struct ev_err *err)
{
    struct prepared_roots *r = host->roots;
    struct root_plan plan = {.host = host,
                             .uid = box->uid,
                             .gid = box->gid,
                             .mounts = r->point_mounts,
                             .n_mounts = r->n_points};
    int rep[2];
    if (pipe2(rep, O_CLOEXEC) < 0)
        return ev_fail(err, errno, "pipe");
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        builder(&plan, rep[1]);
    int clone_errno = errno;
    close(rep[1]);
    if (pid < 0) {
        close(rep[0]);
        return ev_fail(err, clone_errno, "clone the builder of a prepared root");
    }
    struct build_report got = {0};
    ssize_t n = read_full(rep[0], &got, sizeof(got));
    close(rep[0]);
    int fd = -1;
    if (n == (ssize_t)sizeof(got) && got.ok) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            ev_fail(err, errno, "open %s", path);
    } else if (n == (ssize_t)sizeof(got)) {
        got.msg[sizeof(got.msg) - 1] = '\0';
        ev_fail(err, 0, "building the prepared root: %s", got.msg);
    } else {
        ev_fail(err, 0, "the builder of a prepared root died");
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return fd;
}

int roots_get(struct sbx_host *host, const struct sbx_box *box, struct ev_err *err)
{
    struct prepared_roots *r = host->roots;
    uint64_t stamp = sources_stamp(host);
    int stale = -1;
    pthread_mutex_lock(&r->mu);
    for (unsigned i = 0; i < r->n; i++) {
        if (r->roots[i].box_id != box->id)
            continue;
        if (r->roots[i].stamp == stamp) {
            int fd = r->roots[i].fd;
            pthread_mutex_unlock(&r->mu);
            return fd;
        }
        /* Built from what has changed since. The descriptor is only used by this box's runs,
         * which never overlap, and none is running (we hold the box). */
        stale = r->roots[i].fd;
        r->roots[i] = r->roots[--r->n];
        break;
    }
    bool full = r->n == ROOTS_MAX;
    pthread_mutex_unlock(&r->mu);
    if (stale >= 0)
        close(stale);
    if (full)
        return -2;
    /* Only this box's holder builds its root, so no one else adds this box meanwhile; others
     * may add theirs, hence the second look at the count. The stamp was taken before the
     * build, so a change during the build shows at the next run. */
    int fd = build(host, box, err);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&r->mu);
    if (r->n == ROOTS_MAX) {
        pthread_mutex_unlock(&r->mu);
        close(fd);
        return -2;
    }
    r->roots[r->n].box_id = box->id;
    r->roots[r->n].fd = fd;
    r->roots[r->n].stamp = stamp;
    r->n++;
    pthread_mutex_unlock(&r->mu);
    return fd;
}
