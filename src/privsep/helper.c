#include "privsep/helper.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "privsep/nix.h"
#include "privsep/protocol.h"

#define MAX_SLOTS 256

struct slot {
    bool used, busy, cancelled;
    int cancel_fd; /* eventfd, written once by PS_CANCEL */
    int sig[2];    /* pipe: PS_SIGNAL writes a signal's number, the run's watch reads it */
    struct sbx_box box;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t idle;
    pthread_mutex_t send_mu;
    int threads;
    struct slot slots[MAX_SLOTS];
    struct sbx_host *host;
    int sock;
    const char *runtimes_dir;
} helper = {.mu = PTHREAD_MUTEX_INITIALIZER,
            .idle = PTHREAD_COND_INITIALIZER,
            .send_mu = PTHREAD_MUTEX_INITIALIZER};

struct job {
    size_t n;
    int fds[PS_MAX_FDS]; /* received with the request, in its order; -1 once closed */
    int n_fds;
    struct ps_request *req; /* PS_MAX_MSG bytes */
};

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

static void send_reply(struct ps_reply *rep, int fd)
{
    pthread_mutex_lock(&helper.send_mu);
    ssize_t r = ps_send(helper.sock, rep, sizeof(*rep), &fd, fd >= 0 ? 1 : 0);
    pthread_mutex_unlock(&helper.send_mu);
    if (r < 0 && errno != EPIPE && errno != ECONNRESET)
        fprintf(stderr, "envicutor helper: send reply: %s\n", strerror(errno));
}

/* The request id of the run this thread works on (checked by ps_check_request: empty or
 * [A-Za-z0-9._-]), for every line logged about it, the sandbox's included (helper_log). */
static _Thread_local const char *run_request_id;

static const char *run_id(void)
{
    return run_request_id && run_request_id[0] ? run_request_id : "-";
}

static void helper_log(void *ctx, const char *msg)
{
    (void)ctx;
    if (run_request_id)
        fprintf(stderr, "envicutor helper: req %s: %s\n", run_id(), msg);
    else
        fprintf(stderr, "envicutor: %s\n", msg);
}

static void reply_error(struct ps_reply *rep, const char *msg)
{
    rep->rc = -1;
    snprintf(rep->msg, sizeof(rep->msg), "%s", msg);
}

/* Takes the slot for one operation; NULL (with the reason in rep) when it is not open or busy. */
static struct slot *take_slot(uint32_t handle, struct ps_reply *rep)
{
    pthread_mutex_lock(&helper.mu);
    struct slot *s = handle < MAX_SLOTS ? &helper.slots[handle] : NULL;
    if (!s || !s->used) {
        pthread_mutex_unlock(&helper.mu);
        reply_error(rep, "no such box");
        return NULL;
    }
    if (s->busy) {
        pthread_mutex_unlock(&helper.mu);
        reply_error(rep, "the box is busy");
        return NULL;
    }
    s->busy = true;
    pthread_mutex_unlock(&helper.mu);
    return s;
}

static void give_slot(struct slot *s)
{
    pthread_mutex_lock(&helper.mu);
    s->busy = false;
    pthread_mutex_unlock(&helper.mu);
}

static void do_open(const struct ps_request *req, struct ps_reply *rep)
{
    pthread_mutex_lock(&helper.mu);
    int idx = -1;
    for (int i = 0; i < MAX_SLOTS && idx < 0; i++)
        if (!helper.slots[i].used)
            idx = i;
    if (idx < 0) {
        pthread_mutex_unlock(&helper.mu);
        reply_error(rep, "too many open boxes");
        return;
    }
    struct slot *s = &helper.slots[idx];
    *s = (struct slot){.used = true, .busy = true, .cancel_fd = -1, .sig = {-1, -1}};
    pthread_mutex_unlock(&helper.mu);

    struct ev_err err = {0};
    struct sbx_box_options opt = {.disk_kb = req->u.open.disk_kb,
                                  .max_inodes = req->u.open.max_inodes};
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int sig[2] = {-1, -1};
    if (efd < 0) {
        ev_fail(&err, errno, "eventfd");
    } else if (pipe2(sig, O_CLOEXEC | O_NONBLOCK) < 0) {
        ev_fail(&err, errno, "pipe");
    } else if (sbx_box_open(helper.host, &opt, &s->box, &err) == 0) {
        s->cancel_fd = efd;
        s->sig[0] = sig[0];
        s->sig[1] = sig[1];
        rep->box = (uint32_t)idx;
        give_slot(s);
        return;
    }
    if (efd >= 0)
        close(efd);
    for (int i = 0; i < 2; i++)
        if (sig[i] >= 0)
            close(sig[i]);
    reply_error(rep, err.msg);
    pthread_mutex_lock(&helper.mu);
    s->used = s->busy = false;
    pthread_mutex_unlock(&helper.mu);
}

/* Takes the box of a slot down; the caller holds the slot (busy, or everything stopped). */
static void take_down(struct slot *s)
{
    sbx_box_close(helper.host, &s->box);
    if (s->cancel_fd >= 0)
        close(s->cancel_fd);
    for (int i = 0; i < 2; i++)
        if (s->sig[i] >= 0)
            close(s->sig[i]);
}

static void do_close(const struct ps_request *req, struct ps_reply *rep)
{
    struct slot *s = take_slot(req->h.box, rep);
    if (!s)
        return;
    /* The slot is ours (busy) while the box is taken down, and the other boxes' operations need
     * not wait for that unmount: only freeing the slot takes the lock. */
    take_down(s);
    pthread_mutex_lock(&helper.mu);
    *s = (struct slot){.cancel_fd = -1, .sig = {-1, -1}};
    pthread_mutex_unlock(&helper.mu);
}

/* A descriptor received from the server, whose contents the helper is to read. The helper is
 * root, so it reads only through the open file description the server sent, never by a path:
 * /proc/self/fd/N would open the inode anew with root's rights, and an O_PATH descriptor (which
 * anyone can get for a file they may not read) or a write-only one would then read a file the
 * server could not. So the description itself must be open for reading. */
static int check_received(int fd, const char *what, struct ev_err *err)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return ev_fail(err, errno, "%s: the descriptor", what);
    if (fl & O_PATH)
        return ev_fail(err, 0, "%s: an O_PATH descriptor, not a file opened for reading", what);
    if ((fl & O_ACCMODE) != O_RDONLY && (fl & O_ACCMODE) != O_RDWR)
        return ev_fail(err, 0, "%s: the descriptor is not open for reading", what);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ev_fail(err, errno, "%s: fstat", what);
    if (!S_ISREG(st.st_mode))
        return ev_fail(err, 0, "%s: not a regular file", what);
    return 0;
}

/* Copies a checked received descriptor from its offset 0 into dst, at most max bytes (a file
 * that grows, or a sparse one, cannot make the helper copy without end). pread leaves the
 * server's file offset alone. */
static int copy_received(int src, int dst, uint64_t max, const char *what, struct ev_err *err)
{
    char buf[65536];
    uint64_t off = 0;
    for (;;) {
        ssize_t n = pread(src, buf, sizeof(buf), (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ev_fail(err, errno, "read the contents of %s", what);
        if (n == 0)
            return 0;
        if ((uint64_t)n > max - off)
            return ev_fail(err, EFBIG, "%s: more than %llu bytes", what, (unsigned long long)max);
        if (write_full(dst, buf, (size_t)n) < 0)
            return ev_fail(err, errno, "write %s", what);
        off += (uint64_t)n;
    }
}

/* Copies a regular file received from the server into the box, as the box's user. The name
 * is a plain name (checked), created exclusively without following links, relative to the
 * box directory's descriptor: nothing the box's earlier runs left there can redirect it. */
static int write_into_box(const struct slot *s, const struct ps_request *req, int src,
                          struct ev_err *err)
{
    cleanup_close int dfd = open(s->box.dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return ev_fail(err, errno, "open %s", s->box.dir);
    cleanup_close int fd =
        openat(dfd, req->u.write.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
               req->u.write.mode & 0755);
    if (fd < 0)
        return ev_fail(err, errno, "create %s in the box", req->u.write.name);
    if (fchown(fd, s->box.uid, s->box.gid) < 0)
        return ev_fail(err, errno, "chown %s", req->u.write.name);
    /* the box's size-limited tmpfs bounds the copy */
    return copy_received(src, fd, UINT64_MAX, req->u.write.name, err);
}

static void do_write(const struct ps_request *req, int src, struct ps_reply *rep)
{
    struct ev_err err;
    if (check_received(src, "write-file: the source", &err) < 0) {
        reply_error(rep, err.msg);
        return;
    }
    struct slot *s = take_slot(req->h.box, rep);
    if (!s)
        return;
    if (write_into_box(s, req, src, &err) < 0)
        reply_error(rep, err.msg);
    give_slot(s);
}

/* The program's stdin. A memfd the server sealed against writing, growing and shrinking
 * (PS_STDIN_SEALS) cannot change any more, so the box gets that memfd itself, rewound, with no
 * copy: it can neither write it nor reach anything of the server's through it (a sealed file is
 * a memfd, never a file on disk). Anything else is copied into a memfd of the helper's, sealed
 * the same way, rather than given as it is: the box then shares nothing with the server, not
 * the file offset (the box's reads would move it), not a writable description of a server
 * file, and no contents a compromised server could change during the run. Either way it is a
 * regular, seekable file, as programs expect of a redirected stdin. PS_MAX_INPUT bounds what a
 * compromised server could make the helper copy. */
/* Two more kinds are given without a copy. The read end of a pipe (an interactor's output):
 * the box reads it as it is fed, which is the point. A regular file opened read-only that no
 * box can write (no write bit for group or others, not owned by a box's user: a stored file):
 * reopened through /proc/self/fd, so the box gets a description of its own (offset 0, not
 * shared with the server) that is read-only, of a file it has no right to change. It is the
 * file itself, not a copy, so large inputs cost nothing (docs/threat-model.md says what the box
 * can learn of it: its path, through /proc/self/fd/0). */
static bool no_box_can_write(const struct stat *st)
{
    const struct sbx_host *h = helper.host;
    bool box_owned = st->st_uid >= h->first_uid && st->st_uid - h->first_uid < h->n_boxes;
    return (st->st_mode & 022) == 0 && !box_owned;
}

static int stdin_for_box(int src, struct ev_err *err)
{
    struct stat st;
    int fl = fcntl(src, F_GETFL);
    if (fl < 0 || fstat(src, &st) < 0)
        return ev_fail(err, errno, "run: stdin: the descriptor");
    if (S_ISFIFO(st.st_mode) && !(fl & O_PATH)) {
        if ((fl & O_ACCMODE) != O_RDONLY)
            return ev_fail(err, 0, "run: stdin: a pipe's write end");
        int fd = fcntl(src, F_DUPFD_CLOEXEC, 0);
        return fd < 0 ? ev_fail(err, errno, "run: duplicate stdin") : fd;
    }
    if (check_received(src, "run: stdin", err) < 0)
        return -1;
    int seals = fcntl(src, F_GET_SEALS);
    if (seals >= 0 && (seals & PS_STDIN_SEALS) == PS_STDIN_SEALS) {
        if (lseek(src, 0, SEEK_SET) < 0)
            return ev_fail(err, errno, "run: rewind stdin");
        int fd = fcntl(src, F_DUPFD_CLOEXEC, 0);
        return fd < 0 ? ev_fail(err, errno, "run: duplicate stdin") : fd;
    }
    if ((fl & O_ACCMODE) == O_RDONLY && no_box_can_write(&st)) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", src);
        cleanup_close int fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
        struct stat again;
        if (fd < 0 || fstat(fd, &again) < 0)
            return ev_fail(err, errno, "run: reopen stdin");
        if (again.st_dev != st.st_dev || again.st_ino != st.st_ino)
            return ev_fail(err, 0, "run: stdin: reopened another file");
        return steal_fd(&fd);
    }
    cleanup_close int fd = memfd_create("envicutor-stdin", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return ev_fail(err, errno, "memfd_create");
    if (copy_received(src, fd, PS_MAX_INPUT, "run: stdin", err) < 0)
        return -1;
    if (fcntl(fd, F_ADD_SEALS, PS_STDIN_SEALS) < 0)
        return ev_fail(err, errno, "run: seal the copy of stdin");
    if (lseek(fd, 0, SEEK_SET) < 0)
        return ev_fail(err, errno, "run: rewind the copy of stdin");
    return steal_fd(&fd);
}

/* The program's stdout or stderr (name) when it is not captured: the write end of a pipe (to an
 * interactor, or to the server that streams it), given to the box as it is. */
static int check_output(int fd, const char *name, struct ev_err *err)
{
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fstat(fd, &st) < 0)
        return ev_fail(err, errno, "run: %s: the descriptor", name);
    if (!S_ISFIFO(st.st_mode) || (fl & O_PATH) || (fl & O_ACCMODE) != O_WRONLY)
        return ev_fail(err, 0, "run: %s: not the write end of a pipe", name);
    return 0;
}

/* The files of a fresh-box run: regular files open for reading (the box's init copies them
 * into the run's layer), together no larger than the box. */
static int check_files(const struct slot *s, const struct ps_run *r, const int *fds,
                       struct sbx_file *files, struct ev_err *err)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < r->n_files; i++) {
        struct stat st;
        char what[PS_NAME_MAX + 16];
        snprintf(what, sizeof(what), "run: file %s", r->files[i]);
        if (check_received(fds[i], what, err) < 0)
            return -1;
        if (fstat(fds[i], &st) < 0)
            return ev_fail(err, errno, "%s: fstat", what);
        total += (uint64_t)st.st_size;
        files[i] = (struct sbx_file){.name = r->files[i], .fd = fds[i]};
    }
    if (total > s->box.disk_kb * 1024)
        return ev_fail(err, EFBIG, "run: the files (%llu bytes) are larger than the box",
                       (unsigned long long)total);
    return 0;
}

static int output_memfd(const struct sbx_result *res, struct ev_err *err)
{
    cleanup_close int fd = memfd_create("envicutor-output", MFD_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, errno, "memfd_create");
    if ((res->out.len && write_full(fd, res->out.data, res->out.len) < 0) ||
        (res->err.len && write_full(fd, res->err.data, res->err.len) < 0))
        return ev_fail(err, errno, "write the output");
    return steal_fd(&fd);
}

/* fds: what came with the request (stdin, stdout, files; protocol.h), closed here as soon as
 * the run has ended, so that a pipe's other side sees its end at once. */
static void do_run(struct ps_request *req, int *fds, int n_fds, struct ps_reply *rep)
{
    char *argv[PS_MAX_ARGS + 1], *envp[PS_MAX_ENV + 1];
    struct ev_err err = {0};
    /* checked once already; this only splits the strings again */
    if (ps_check_request(
            req, offsetof(struct ps_request, u) + sizeof(req->u.run) + req->u.run.strings_len,
            n_fds, argv, envp, &err) < 0) {
        reply_error(rep, err.msg);
        return;
    }
    run_request_id = req->u.run.request_id;
    struct slot *s = take_slot(req->h.box, rep);
    if (!s) {
        fprintf(stderr, "envicutor helper: req %s: run refused: %s\n", run_id(), rep->msg);
        run_request_id = NULL;
        return;
    }
    const struct ps_run *r = &req->u.run;
    char rt_path[512];
    cleanup_close int in_fd = -1;
    struct sbx_mount mounts[2];
    struct sbx_file files[PS_MAX_FILES];
    struct sbx_run_config cfg = {.argv = argv,
                                 .envp = envp,
                                 .cancel_fd = s->cancel_fd,
                                 .signal_fd = s->sig[0],
                                 .fresh_box = r->flags & PS_RUN_FRESH_BOX,
                                 .files = files,
                                 .n_files = r->n_files};
    struct sbx_result res;
    memset(&res, 0, sizeof(res));
    struct stat st;
    int next = 0;
    if (r->has_stdin) {
        in_fd = stdin_for_box(fds[next++], &err);
        if (in_fd < 0) {
            reply_error(rep, err.msg);
            goto out;
        }
        cfg.stdin_fd = in_fd;
    }
    if (r->flags & PS_RUN_STDOUT_FD) {
        if (check_output(fds[next], "stdout", &err) < 0) {
            reply_error(rep, err.msg);
            goto out;
        }
        cfg.stdout_fd = fds[next++];
    }
    if (r->flags & PS_RUN_STDERR_FD) {
        if (check_output(fds[next], "stderr", &err) < 0) {
            reply_error(rep, err.msg);
            goto out;
        }
        cfg.stderr_fd = fds[next++];
    }
    /* a signal asked for between runs is not for this one */
    unsigned char stale[64];
    while (read(s->sig[0], stale, sizeof(stale)) > 0)
        ;
    if (check_files(s, r, fds + next, files, &err) < 0) {
        reply_error(rep, err.msg);
        goto out;
    }
    if (r->runtime[0]) {
        /* The runtime store belongs to the unprivileged server, so nothing below the data
         * directory is trusted: a compromised server could swap "runtimes" (or a runtime)
         * for a link to any host directory and have it bound into a box. Each level is
         * opened without following links, and the sandbox refuses the bind unless it
         * mounted that very directory (a swap after this check is caught there). */
        cleanup_close int rfd =
            open(helper.runtimes_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        cleanup_close int dfd =
            rfd < 0 ? -1 : openat(rfd, r->runtime, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0 || fstat(dfd, &st) < 0) {
            reply_error(rep, "run: no such runtime directory");
            goto out;
        }
        snprintf(rt_path, sizeof(rt_path), "%s/%s", helper.runtimes_dir, r->runtime);
        mounts[cfg.n_mounts++] = (struct sbx_mount){
            .source = rt_path, .target = "/runtime", .dev = st.st_dev, .ino = st.st_ino};
    }
    /* Nix runtimes: the store their environment points into, read-only like every mount. */
    if (r->flags & PS_RUN_MOUNT_NIX)
        mounts[cfg.n_mounts++] = (struct sbx_mount){.source = "/nix", .target = "/nix"};
    cfg.mounts = mounts;
    cfg.limits = (struct sbx_limits){
        .wall_time_us = r->limits.wall_time_us,
        .cpu_time_us = r->limits.cpu_time_us,
        .extra_time_us = r->limits.extra_time_us,
        .memory_kb = r->limits.memory_kb,
        .max_open_files = r->limits.max_open_files,
        .max_file_size_kb = r->limits.max_file_size_kb,
        .max_processes = r->limits.max_processes,
        .max_output_bytes = r->limits.max_output_bytes,
        .tmp_kb = r->limits.tmp_kb,
    };
    pthread_mutex_lock(&helper.mu);
    bool cancelled = s->cancelled;
    pthread_mutex_unlock(&helper.mu);
    if (cancelled) {
        reply_error(rep, "the box was cancelled");
        goto out;
    }
    /* A sandbox failure is an answer too (status XX), not a failed request. */
    sbx_run(helper.host, &s->box, &cfg, &res, &err);
    close_fds(fds, n_fds);
    if (in_fd >= 0) {
        close(in_fd);
        in_fd = -1;
    }
    /* One line per run, to follow a request through the helper; the program's arguments,
     * input and output stay out of it. */
    const char *sname = sbx_status_name(res.status);
    fprintf(stderr, "envicutor helper: req %s: run in box %u: %s, %.3fs wall, %.3fs cpu%s%s\n",
            run_id(), req->h.box, sname ? sname : "OK", (double)res.wall_time_us / 1e6,
            (double)res.cpu_time_us / 1e6, res.status == SBX_XX ? ": " : "",
            res.status == SBX_XX ? res.message : "");
    int ofd = output_memfd(&res, &err);
    if (ofd < 0) {
        reply_error(rep, err.msg);
    } else {
        rep->res = (struct ps_result){
            .status = (int32_t)res.status,
            .exit_code = res.exit_code,
            .exit_signal = res.exit_signal,
            .flags = (res.memory_limit_exceeded ? PS_F_MEMORY : 0) |
                     (res.cpu_limit_exceeded ? PS_F_CPU : 0) |
                     (res.wall_limit_exceeded ? PS_F_WALL : 0) |
                     (res.out.truncated ? PS_F_OUT_TRUNC : 0) |
                     (res.err.truncated ? PS_F_ERR_TRUNC : 0),
            .cpu_time_us = res.cpu_time_us,
            .wall_time_us = res.wall_time_us,
            .memory_kb = res.memory_kb,
            .out_len = res.out.len,
            .err_len = res.err.len,
        };
        snprintf(rep->res.message, sizeof(rep->res.message), "%s", res.message);
        give_slot(s);
        sbx_result_free(&res);
        send_reply(rep, ofd);
        close(ofd);
        rep->type = 0; /* sent */
        run_request_id = NULL;
        return;
    }
out:
    fprintf(stderr, "envicutor helper: req %s: run in box %u failed: %s\n", run_id(), req->h.box,
            rep->msg);
    run_request_id = NULL;
    sbx_result_free(&res);
    give_slot(s);
}

/* A Nix operation: runs on the host as the server's user (not in a box; privsep/nix.h), one at
 * a time because the server only asks for them as exclusive work. The reply's memfd holds stdout,
 * stderr and, for an installation, the environment. */
static void do_nix(const struct ps_request *req, struct ps_reply *rep)
{
    struct nix_result res;
    struct ev_err err = {0};
    int rc;
    switch (req->h.type) {
    case PS_NIX_INSTALL:
        rc = nix_install(helper.runtimes_dir, req->u.nix.runtime, req->u.nix.timeout_s, &res, &err);
        break;
    case PS_NIX_UPDATE:
        rc = nix_update(req->u.nix.timeout_s, &res, &err);
        break;
    default:
        rc = nix_gc(req->u.nix.timeout_s, &res, &err);
    }
    if (rc < 0) {
        reply_error(rep, err.msg);
        return;
    }
    cleanup_close int fd = memfd_create("envicutor-nix", MFD_CLOEXEC);
    if (fd < 0 || (res.out_len && write_full(fd, res.out, res.out_len) < 0) ||
        (res.err_len && write_full(fd, res.err, res.err_len) < 0) ||
        (res.env_len && write_full(fd, res.env, res.env_len) < 0)) {
        reply_error(rep, "nix: could not write the output");
        nix_result_free(&res);
        return;
    }
    rep->res = (struct ps_result){
        .status = res.exit_code == 0 ? SBX_OK
                  : res.timed_out    ? SBX_TO
                                     : SBX_RE,
        .exit_code = res.exit_code,
        .exit_signal = -1,
        .flags = res.timed_out ? PS_F_TIMED_OUT : 0,
        .out_len = res.out_len,
        .err_len = res.err_len,
        .env_len = res.env_len,
    };
    nix_result_free(&res);
    send_reply(rep, fd);
    rep->type = 0; /* sent */
}

static void *job_main(void *arg)
{
    struct job *j = arg;
    struct ps_reply rep = {.magic = PS_MAGIC, .type = j->req->h.type, .req_id = j->req->h.req_id};
    switch (j->req->h.type) {
    case PS_OPEN_BOX:
        do_open(j->req, &rep);
        break;
    case PS_WRITE_FILE:
        do_write(j->req, j->fds[0], &rep);
        break;
    case PS_RUN:
        do_run(j->req, j->fds, j->n_fds, &rep);
        break;
    case PS_CLOSE_BOX:
        do_close(j->req, &rep);
        break;
    case PS_NIX_INSTALL:
    case PS_NIX_UPDATE:
    case PS_NIX_GC:
        do_nix(j->req, &rep);
        break;
    default:
        reply_error(&rep, "unknown request");
    }
    if (rep.type)
        send_reply(&rep, -1);
    close_fds(j->fds, j->n_fds);
    free(j->req);
    free(j);
    pthread_mutex_lock(&helper.mu);
    if (--helper.threads == 0)
        pthread_cond_broadcast(&helper.idle);
    pthread_mutex_unlock(&helper.mu);
    return NULL;
}

static void cancel_slot_locked(struct slot *s)
{
    if (!s->used || s->cancelled)
        return;
    s->cancelled = true;
    if (s->cancel_fd >= 0) {
        uint64_t one = 1;
        if (write(s->cancel_fd, &one, sizeof(one)) < 0)
            fprintf(stderr, "envicutor helper: cancel: %s\n", strerror(errno));
    }
}

/* Receives one message and at most PS_MAX_FDS descriptors into fds (*n_fds of them); the
 * count of all that came is *fd_count, which ps_check_request compares with what the message
 * declares. Descriptors beyond PS_MAX_FDS are closed and the message is then refused. Returns
 * the message size, 0 at end of file, -1 on error. */
static ssize_t receive(struct ps_request *req, int *fds, int *n_fds, int *fd_count)
{
    union {
        char buf[CMSG_SPACE((PS_MAX_FDS + 4) * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {req, PS_MAX_MSG};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n;
    while ((n = recvmsg(helper.sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    *n_fds = 0;
    *fd_count = 0;
    if (n < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*n_fds < PS_MAX_FDS)
                fds[(*n_fds)++] = f;
            else
                close(f);
            (*fd_count)++;
        }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        *fd_count = 99; /* refused by the check */
    return n;
}

int helper_main(struct sbx_host *host, int sock, const char *runtimes_dir)
{
    helper.host = host;
    helper.sock = sock;
    helper.runtimes_dir = runtimes_dir;
    for (int i = 0; i < MAX_SLOTS; i++)
        helper.slots[i] = (struct slot){.cancel_fd = -1, .sig = {-1, -1}};
    /* The server decides when to stop; a terminal's ^C reaches the whole process group and
     * must not kill the helper before it has cleaned its boxes. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int status = 0;
    char *argv[PS_MAX_ARGS + 1], *envp[PS_MAX_ENV + 1];
    for (;;) {
        struct ps_request *req = malloc(PS_MAX_MSG);
        if (!req) {
            fprintf(stderr, "envicutor helper: out of memory\n");
            status = 1;
            break;
        }
        int fds[PS_MAX_FDS], n_fds, fd_count;
        ssize_t n = receive(req, fds, &n_fds, &fd_count);
        if (n <= 0) {
            if (n < 0) {
                fprintf(stderr, "envicutor helper: receive: %s\n", strerror(errno));
                status = 1;
            }
            free(req);
            break;
        }
        struct ev_err err = {0};
        if (ps_check_request(req, (size_t)n, fd_count, argv, envp, &err) < 0) {
            fprintf(stderr, "envicutor helper: refused a request: %s\n", err.msg);
            struct ps_reply rep = {.magic = PS_MAGIC, .rc = -1};
            if ((size_t)n >= sizeof(req->h)) {
                rep.type = req->h.type;
                rep.req_id = req->h.req_id;
            }
            snprintf(rep.msg, sizeof(rep.msg), "refused: %s", err.msg);
            send_reply(&rep, -1);
            close_fds(fds, n_fds);
            free(req);
            continue;
        }
        if (req->h.type == PS_SIGNAL) {
            /* Like a cancel, at once, without a thread: the run's watch does the rest. A full
             * pipe (64 KiB of signals nobody read) drops this one. */
            pthread_mutex_lock(&helper.mu);
            struct slot *s = req->h.box < MAX_SLOTS ? &helper.slots[req->h.box] : NULL;
            unsigned char b = (unsigned char)req->u.sig.signal;
            if (s && s->used && s->sig[1] >= 0 && write(s->sig[1], &b, 1) < 0 && errno != EAGAIN)
                fprintf(stderr, "envicutor helper: signal: %s\n", strerror(errno));
            pthread_mutex_unlock(&helper.mu);
            free(req);
            continue;
        }
        if (req->h.type == PS_CANCEL) {
            pthread_mutex_lock(&helper.mu);
            if (req->h.box < MAX_SLOTS)
                cancel_slot_locked(&helper.slots[req->h.box]);
            else if (req->h.box == PS_NIX_BOX)
                nix_cancel_running();
            pthread_mutex_unlock(&helper.mu);
            free(req);
            continue;
        }
        struct job *j = malloc(sizeof(*j));
        pthread_t t;
        pthread_attr_t attr;
        if (!j || pthread_attr_init(&attr) != 0) {
            free(j);
            free(req);
            close_fds(fds, n_fds);
            fprintf(stderr, "envicutor helper: out of memory\n");
            continue;
        }
        *j = (struct job){.n = (size_t)n, .n_fds = n_fds, .req = req};
        memcpy(j->fds, fds, sizeof(fds));
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&helper.mu);
        helper.threads++;
        pthread_mutex_unlock(&helper.mu);
        int e = pthread_create(&t, &attr, job_main, j);
        pthread_attr_destroy(&attr);
        if (e != 0) {
            fprintf(stderr, "envicutor helper: pthread_create: %s\n", strerror(e));
            struct ps_reply rep = {
                .magic = PS_MAGIC, .type = req->h.type, .req_id = req->h.req_id, .rc = -1};
            snprintf(rep.msg, sizeof(rep.msg), "the helper could not start a thread");
            send_reply(&rep, -1);
            pthread_mutex_lock(&helper.mu);
            helper.threads--;
            pthread_mutex_unlock(&helper.mu);
            close_fds(fds, n_fds);
            free(req);
            free(j);
        }
    }
    /* The server is gone (or stopping): kill every run, wait for the threads, close every
     * box, so nothing is left behind. */
    nix_cancel_all();
    pthread_mutex_lock(&helper.mu);
    for (int i = 0; i < MAX_SLOTS; i++)
        cancel_slot_locked(&helper.slots[i]);
    while (helper.threads > 0)
        pthread_cond_wait(&helper.idle, &helper.mu);
    for (int i = 0; i < MAX_SLOTS; i++)
        if (helper.slots[i].used) {
            take_down(&helper.slots[i]);
            helper.slots[i] = (struct slot){.cancel_fd = -1, .sig = {-1, -1}};
        }
    pthread_mutex_unlock(&helper.mu);
    nix_stop(); /* its daemon's cgroup too, before our subtree goes */
    struct ev_err err;
    if (sbx_host_cleanup(helper.host, &err) < 0)
        fprintf(stderr, "envicutor helper: cgroup clean-up: %s\n", err.msg);
    return status;
}

int helper_process_main(int argc, char **argv)
{
    if (argc != 2 || geteuid() != 0 || fcntl(HELPER_FD, F_GETFD) < 0) {
        fprintf(stderr, "envicutor: %s is started by 'envicutor serve' only\n", HELPER_COMMAND);
        return 2;
    }
    if (fcntl(HELPER_FD, F_SETFD, FD_CLOEXEC) < 0)
        return 1;
    /* only the name ps shows; it cannot fail for a valid pointer */
    (void)prctl(PR_SET_NAME, "envicutor-priv", 0, 0, 0);
    static struct sbx_host host;
    /* A few network namespaces kept ready, so that no run waits for its own, and each box's
     * read-only tree built once, with mount points for a runtime's directory and the Nix
     * store (the helper's only extra mounts). */
    static const char *const points[] = {"/runtime", "/nix", NULL};
    struct sbx_host_config hcfg = {
        .run_dir = getenv("ENVICUTOR_RUN_DIR"),
        .netns_ahead = 4,
        .prepared_root_points = points,
        .log = helper_log,
    };
    struct ev_err err;
    if (sbx_host_init(&host, &hcfg, &err) < 0) {
        fprintf(stderr, "envicutor helper: %s\n", err.msg);
        return 1;
    }
    /* Nix commands run as the server's user; its HOME for them is beside the runtimes. */
    char data_dir[512];
    snprintf(data_dir, sizeof(data_dir), "%s", argv[1]);
    char *slash = strrchr(data_dir, '/');
    if (slash && slash != data_dir)
        *slash = '\0';
    const char *user = getenv("ENVICUTOR_USER");
    if (nix_start(&host, user && user[0] ? user : "envicutor", data_dir, &err) < 0)
        fprintf(stderr, "envicutor helper: Nix runtimes will fail: %s\n", err.msg);
    int rc = helper_main(&host, HELPER_FD, argv[1]);
    sbx_host_free(&host);
    return rc;
}
