#include "privsep/client.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/filename.h"
#include "common/request_id.h"

struct pending {
    uint64_t id;
    bool done;
    struct ps_reply rep;
    int fd;
    struct pending *next;
};

struct psc {
    int sock;
    pthread_t reader;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t send_mu;
    uint64_t next_id;
    bool dead;
    struct pending *list;
};

static void *reader_main(void *arg)
{
    struct psc *c = arg;
    for (;;) {
        struct ps_reply rep;
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct iovec iov = {&rep, sizeof(rep)};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = u.buf,
                            .msg_controllen = sizeof(u.buf)};
        ssize_t n = recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        int fd = -1;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); n > 0 && h; h = CMSG_NXTHDR(&mh, h))
            if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS &&
                h->cmsg_len == CMSG_LEN(sizeof(int)))
                memcpy(&fd, CMSG_DATA(h), sizeof(int));
        if (n <= 0) {
            if (n < 0)
                fprintf(stderr, "envicutor: the helper's socket: %s\n", strerror(errno));
            break;
        }
        if ((size_t)n != sizeof(rep) || rep.magic != PS_MAGIC) {
            fprintf(stderr, "envicutor: malformed reply from the helper (%zd bytes)\n", n);
            if (fd >= 0)
                close(fd);
            continue;
        }
        pthread_mutex_lock(&c->mu);
        struct pending *p = c->list;
        while (p && p->id != rep.req_id)
            p = p->next;
        if (p && !p->done) {
            p->rep = rep;
            p->fd = fd;
            p->done = true;
            pthread_cond_broadcast(&c->cv);
        } else if (fd >= 0) {
            close(fd);
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&c->mu);
    c->dead = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

struct psc *psc_start(int sock, struct ev_err *err)
{
    struct psc *c = calloc(1, sizeof(*c));
    if (!c) {
        ev_fail(err, ENOMEM, "helper client");
        return NULL;
    }
    c->sock = sock;
    c->next_id = 1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->send_mu, NULL);
    int e = cond_init_monotonic(&c->cv);
    if (e != 0) {
        ev_fail(err, e, "the helper client's condition variable");
        free(c);
        return NULL;
    }
    e = pthread_create(&c->reader, NULL, reader_main, c);
    if (e != 0) {
        ev_fail(err, e, "start the helper's reader thread");
        free(c);
        return NULL;
    }
    return c;
}

void psc_stop(struct psc *c)
{
    if (!c)
        return;
    /* shutdown, not close: the reader thread is still in recvmsg on this descriptor */
    shutdown(c->sock, SHUT_RDWR);
    pthread_join(c->reader, NULL);
    close(c->sock);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->send_mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static int send_request(struct psc *c, const void *msg, size_t len, const int *fds, int n_fds,
                        struct ev_err *err)
{
    pthread_mutex_lock(&c->send_mu);
    ssize_t r = ps_send(c->sock, msg, len, fds, n_fds);
    pthread_mutex_unlock(&c->send_mu);
    if (r < 0)
        return ev_fail(err, errno, "send a request to the helper");
    return 0;
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* Sends a request with the n_fds descriptors of fds, closes them once sent (or when it could
 * not be sent), and waits for its reply. While waiting, abort_fn is polled every 10 ms; when it
 * says so, the box is cancelled once, and the reply (which then comes soon) is still awaited so
 * the box is never left busy. */
static int call(struct psc *c, struct ps_request *req, size_t len, int *fds, int n_fds,
                psc_abort_fn abort_fn, void *abort_ctx, struct ps_reply *rep, int *rep_fd,
                bool *aborted, struct ev_err *err)
{
    struct pending p = {.fd = -1};
    pthread_mutex_lock(&c->mu);
    if (c->dead) {
        pthread_mutex_unlock(&c->mu);
        close_fds(fds, n_fds);
        return ev_fail(err, 0, "the privileged helper is gone");
    }
    p.id = c->next_id++;
    p.next = c->list;
    c->list = &p;
    pthread_mutex_unlock(&c->mu);

    req->h.magic = PS_MAGIC;
    req->h.req_id = p.id;
    int rc = send_request(c, req, len, fds, n_fds, err);
    close_fds(fds, n_fds);
    bool cancelled = false;
    pthread_mutex_lock(&c->mu);
    while (rc == 0 && !p.done && !c->dead) {
        if (abort_fn && !cancelled) {
            struct timespec ts = monotonic_after_ms(10);
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            if (!p.done && abort_fn(abort_ctx)) {
                cancelled = true;
                pthread_mutex_unlock(&c->mu);
                psc_cancel(c, req->h.box);
                pthread_mutex_lock(&c->mu);
            }
        } else {
            pthread_cond_wait(&c->cv, &c->mu);
        }
    }
    /* unlink */
    for (struct pending **pp = &c->list; *pp; pp = &(*pp)->next)
        if (*pp == &p) {
            *pp = p.next;
            break;
        }
    bool dead = c->dead && !p.done;
    pthread_mutex_unlock(&c->mu);
    if (aborted)
        *aborted = cancelled;
    if (rc < 0)
        return -1;
    if (dead)
        return ev_fail(err, 0, "the privileged helper is gone");
    *rep = p.rep;
    if (rep_fd)
        *rep_fd = p.fd;
    else if (p.fd >= 0)
        close(p.fd);
    if (cancelled) {
        if (p.fd >= 0 && rep_fd) {
            close(p.fd);
            *rep_fd = -1;
        }
        return ev_fail(err, ECANCELED, "the request was aborted");
    }
    if (p.rep.rc != 0) {
        p.rep.msg[sizeof(p.rep.msg) - 1] = '\0';
        return ev_fail(err, 0, "helper: %s", p.rep.msg);
    }
    return 0;
}

int psc_open_box(struct psc *c, uint64_t disk_kb, uint64_t max_inodes, uint32_t *box,
                 struct ev_err *err)
{
    struct ps_request req = {.h = {.type = PS_OPEN_BOX}};
    req.u.open = (struct ps_open_box){disk_kb, max_inodes};
    struct ps_reply rep;
    if (call(c, &req, offsetof(struct ps_request, u) + sizeof(req.u.open), NULL, 0, NULL, NULL,
             &rep, NULL, NULL, err) < 0)
        return -1;
    *box = rep.box;
    return 0;
}

static int memfd_with(const void *data, size_t len, struct ev_err *err)
{
    cleanup_close int fd = memfd_create("envicutor-data", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return ev_fail(err, errno, "memfd_create");
    if (len && write_full(fd, data, len) < 0)
        return ev_fail(err, errno, "write to a memfd");
    return steal_fd(&fd);
}

int psc_write_file(struct psc *c, uint32_t box, const char *name, unsigned mode, const void *data,
                   size_t len, struct ev_err *err)
{
    struct ps_request req = {.h = {.type = PS_WRITE_FILE, .box = box}};
    if (strlen(name) > PS_NAME_MAX)
        return ev_fail(err, 0, "file name too long");
    snprintf(req.u.write.name, sizeof(req.u.write.name), "%s", name);
    req.u.write.mode = mode;
    int fd = memfd_with(data, len, err);
    if (fd < 0)
        return -1;
    struct ps_reply rep;
    return call(c, &req, offsetof(struct ps_request, u) + sizeof(req.u.write), &fd, 1, NULL, NULL,
                &rep, NULL, NULL, err);
}

int psc_close_box(struct psc *c, uint32_t box, struct ev_err *err)
{
    struct ps_request req = {.h = {.type = PS_CLOSE_BOX, .box = box}};
    struct ps_reply rep;
    return call(c, &req, sizeof(req.h), NULL, 0, NULL, NULL, &rep, NULL, NULL, err);
}

void psc_cancel(struct psc *c, uint32_t box)
{
    struct ps_header h = {.magic = PS_MAGIC, .type = PS_CANCEL, .box = box};
    struct ev_err err;
    if (send_request(c, &h, sizeof(h), NULL, 0, &err) < 0)
        fprintf(stderr, "envicutor: cancel box: %s\n", err.msg);
}

void psc_signal(struct psc *c, uint32_t box, int sig)
{
    struct {
        struct ps_header h;
        struct ps_signal s;
    } m = {.h = {.magic = PS_MAGIC, .type = PS_SIGNAL, .box = box}, .s = {.signal = (uint32_t)sig}};
    struct ev_err err;
    if (send_request(c, &m, sizeof(m), NULL, 0, &err) < 0)
        fprintf(stderr, "envicutor: signal a box: %s\n", err.msg);
}

static int read_output(int fd, uint64_t off, uint64_t len, struct sbx_output *o, struct ev_err *err)
{
    o->data = malloc(len + 1);
    if (!o->data)
        return ev_fail(err, ENOMEM, "output of %llu bytes", (unsigned long long)len);
    ssize_t n = pread_full(fd, o->data, len, (off_t)off);
    if (n < 0 || (uint64_t)n != len)
        return ev_fail(err, n < 0 ? errno : 0, "read the program's output");
    o->data[len] = '\0';
    o->len = len;
    return 0;
}

/* A sealed memfd with data, so that the helper may give the box this very memfd instead of a
 * copy (privsep/helper.c, stdin_for_box). */
static int sealed_memfd(const void *data, size_t len, bool newline, struct ev_err *err)
{
    cleanup_close int fd = memfd_with(data, len, err);
    if (fd < 0)
        return -1;
    if (newline && write_full(fd, "\n", 1) < 0)
        return ev_fail(err, errno, "write to a memfd");
    if (fcntl(fd, F_ADD_SEALS, PS_STDIN_SEALS) < 0)
        return ev_fail(err, errno, "seal a memfd");
    return steal_fd(&fd);
}

/* The descriptors of a run's request, in the order of protocol.h: stdin, stdout, the files.
 * All of the caller's are placed first, so that on failure closing fds[0..*n_fds) closes each
 * of them once (psc_run owns them from the call on); what comes from memory then goes into
 * sealed memfds. */
static int run_fds(const struct psc_run *run, struct ps_run *r, int *fds, int *n_fds,
                   struct ev_err *err)
{
    int n = 0, in_slot = -1, file_slot = -1;
    if (run->input_fd > 0 || run->input) {
        in_slot = n;
        fds[n++] = run->input_fd > 0 ? run->input_fd : -1;
        r->has_stdin = 1;
    }
    if (run->output_fd > 0) {
        fds[n++] = run->output_fd;
        r->flags |= PS_RUN_STDOUT_FD;
    }
    if (run->error_fd > 0) {
        fds[n++] = run->error_fd;
        r->flags |= PS_RUN_STDERR_FD;
    }
    file_slot = n;
    for (size_t i = 0; i < run->n_files; i++) {
        fds[n++] = run->files[i].fd > 0 ? run->files[i].fd : -1;
        snprintf(r->files[i], sizeof(r->files[i]), "%s", run->files[i].name);
    }
    r->n_files = (uint32_t)run->n_files;
    *n_fds = n;
    if (in_slot >= 0 && fds[in_slot] < 0) {
        fds[in_slot] = sealed_memfd(run->input, run->input_len, run->input_newline, err);
        if (fds[in_slot] < 0)
            return -1;
    }
    for (size_t i = 0; i < run->n_files; i++) {
        const struct psc_file *f = &run->files[i];
        int *slot = &fds[file_slot + (int)i];
        if (*slot < 0 && (*slot = sealed_memfd(f->data, f->len, false, err)) < 0)
            return ev_fail(err, err->errnum, "file %s", f->name);
    }
    return 0;
}

/* Closes the caller's descriptors of a run that is refused before they were taken. */
static void close_callers_fds(const struct psc_run *run)
{
    if (run->input_fd > 0)
        close(run->input_fd);
    if (run->output_fd > 0)
        close(run->output_fd);
    if (run->error_fd > 0)
        close(run->error_fd);
    for (size_t i = 0; i < run->n_files; i++)
        if (run->files[i].fd > 0)
            close(run->files[i].fd);
}

int psc_run(struct psc *c, uint32_t box, const struct psc_run *run, psc_abort_fn abort_fn,
            void *abort_ctx, struct sbx_result *res, bool *aborted, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    res->status = SBX_XX;
    res->exit_code = res->exit_signal = -1;
    *aborted = false;
    if (run->n_files > PS_MAX_FILES || (run->n_files && !run->fresh_box)) {
        close_callers_fds(run);
        return ev_fail(err, EINVAL, "at most %d files, in a fresh box only", PS_MAX_FILES);
    }
    for (size_t i = 0; i < run->n_files; i++)
        if (!run->files[i].name || !plain_file_name(run->files[i].name)) {
            close_callers_fds(run);
            return ev_fail(err, EINVAL, "file %zu: not a plain file name", i);
        }
    cleanup_free struct ps_request *req = calloc(1, PS_MAX_MSG);
    if (!req) {
        close_callers_fds(run);
        return ev_fail(err, ENOMEM, "run request");
    }
    req->h.type = PS_RUN;
    req->h.box = box;
    struct ps_run *r = &req->u.run;
    r->limits = run->limits;
    if (run->runtime)
        snprintf(r->runtime, sizeof(r->runtime), "%s", run->runtime);
    r->flags = (run->mount_nix ? PS_RUN_MOUNT_NIX : 0) | (run->fresh_box ? PS_RUN_FRESH_BOX : 0);
    int fds[PS_MAX_FDS], n_fds = 0;
    if (run_fds(run, r, fds, &n_fds, err) < 0) {
        close_fds(fds, n_fds);
        return -1;
    }
    if (run->request_id && request_id_valid(run->request_id))
        snprintf(r->request_id, sizeof(r->request_id), "%s", run->request_id);
    size_t head = offsetof(struct ps_request, u) + sizeof(*r), off = head;
    char *base = (char *)req;
    char *const *lists[2] = {run->argv, run->envp};
    uint32_t counts[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; lists[k] && lists[k][i]; i++) {
            size_t n = strlen(lists[k][i]) + 1;
            if (n > PS_MAX_MSG - off || counts[k] >= (k ? PS_MAX_ENV : PS_MAX_ARGS)) {
                close_fds(fds, n_fds);
                return ev_fail(err, E2BIG, "the command and its environment are too large");
            }
            memcpy(base + off, lists[k][i], n);
            off += n;
            counts[k]++;
        }
    }
    r->argc = counts[0];
    r->envc = counts[1];
    r->strings_len = (uint32_t)(off - head);
    struct ps_reply rep;
    cleanup_close int out_fd = -1;
    if (call(c, req, off, fds, n_fds, abort_fn, abort_ctx, &rep, &out_fd, aborted, err) < 0)
        return -1;
    const struct ps_result *pr = &rep.res;
    if (out_fd < 0)
        return ev_fail(err, 0, "the helper sent no output");
    if (read_output(out_fd, 0, pr->out_len, &res->out, err) < 0 ||
        read_output(out_fd, pr->out_len, pr->err_len, &res->err, err) < 0) {
        sbx_result_free(res);
        return -1;
    }
    res->status = (enum sbx_status)pr->status;
    if (pr->status < SBX_OK || pr->status > SBX_XX)
        res->status = SBX_XX;
    res->exit_code = pr->exit_code;
    res->exit_signal = pr->exit_signal;
    res->cpu_time_us = pr->cpu_time_us;
    res->wall_time_us = pr->wall_time_us;
    res->memory_kb = pr->memory_kb;
    res->memory_limit_exceeded = pr->flags & PS_F_MEMORY;
    res->cpu_limit_exceeded = pr->flags & PS_F_CPU;
    res->wall_limit_exceeded = pr->flags & PS_F_WALL;
    res->out.truncated = pr->flags & PS_F_OUT_TRUNC;
    res->err.truncated = pr->flags & PS_F_ERR_TRUNC;
    memcpy(res->message, pr->message, sizeof(res->message));
    res->message[sizeof(res->message) - 1] = '\0';
    return 0;
}

void psc_nix_result_free(struct psc_nix_result *r)
{
    free(r->out);
    free(r->err);
    free(r->env);
    memset(r, 0, sizeof(*r));
}

int psc_nix(struct psc *c, enum ps_type type, const char *runtime, unsigned timeout_s,
            psc_abort_fn abort_fn, void *abort_ctx, struct psc_nix_result *res, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    struct ps_request req = {.h = {.type = (uint32_t)type, .box = PS_NIX_BOX}};
    if (runtime)
        snprintf(req.u.nix.runtime, sizeof(req.u.nix.runtime), "%s", runtime);
    req.u.nix.timeout_s = timeout_s;
    struct ps_reply rep;
    cleanup_close int fd = -1;
    if (call(c, &req, offsetof(struct ps_request, u) + sizeof(req.u.nix), NULL, 0, abort_fn,
             abort_ctx, &rep, &fd, NULL, err) < 0)
        return -1;
    if (fd < 0)
        return ev_fail(err, 0, "the helper sent no output");
    const struct ps_result *pr = &rep.res;
    struct sbx_output o[3] = {{0}};
    if (read_output(fd, 0, pr->out_len, &o[0], err) < 0 ||
        read_output(fd, pr->out_len, pr->err_len, &o[1], err) < 0 ||
        read_output(fd, pr->out_len + pr->err_len, pr->env_len, &o[2], err) < 0) {
        for (int i = 0; i < 3; i++)
            free(o[i].data);
        return -1;
    }
    res->exit_code = pr->exit_code;
    res->timed_out = pr->flags & PS_F_TIMED_OUT;
    res->out = o[0].data;
    res->out_len = o[0].len;
    res->err = o[1].data;
    res->err_len = o[1].len;
    res->env = o[2].data;
    res->env_len = o[2].len;
    return 0;
}
