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

static int send_request(struct psc *c, const void *msg, size_t len, int fd, struct ev_err *err)
{
    pthread_mutex_lock(&c->send_mu);
    ssize_t r = ps_send(c->sock, msg, len, fd);
    pthread_mutex_unlock(&c->send_mu);
    if (r < 0)
        return ev_fail(err, errno, "send a request to the helper");
    return 0;
}

/* Sends a request and waits for its reply. While waiting, abort_fn is polled every 10 ms;
 * when it says so, the box is cancelled once, and the reply (which then comes soon) is
 * still awaited so the box is never left busy. */
static int call(struct psc *c, struct ps_request *req, size_t len, int fd, psc_abort_fn abort_fn,
                void *abort_ctx, struct ps_reply *rep, int *rep_fd, bool *aborted,
                struct ev_err *err)
{
    struct pending p = {.fd = -1};
    pthread_mutex_lock(&c->mu);
    if (c->dead) {
        pthread_mutex_unlock(&c->mu);
        return ev_fail(err, 0, "the privileged helper is gone");
    }
    p.id = c->next_id++;
    p.next = c->list;
    c->list = &p;
    pthread_mutex_unlock(&c->mu);

    req->h.magic = PS_MAGIC;
    req->h.req_id = p.id;
    int rc = send_request(c, req, len, fd, err);
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
    if (call(c, &req, offsetof(struct ps_request, u) + sizeof(req.u.open), -1, NULL, NULL, &rep,
             NULL, NULL, err) < 0)
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
    cleanup_close int fd = memfd_with(data, len, err);
    if (fd < 0)
        return -1;
    struct ps_reply rep;
    return call(c, &req, offsetof(struct ps_request, u) + sizeof(req.u.write), fd, NULL, NULL, &rep,
                NULL, NULL, err);
}

int psc_close_box(struct psc *c, uint32_t box, struct ev_err *err)
{
    struct ps_request req = {.h = {.type = PS_CLOSE_BOX, .box = box}};
    struct ps_reply rep;
    return call(c, &req, sizeof(req.h), -1, NULL, NULL, &rep, NULL, NULL, err);
}

void psc_cancel(struct psc *c, uint32_t box)
{
    struct ps_header h = {.magic = PS_MAGIC, .type = PS_CANCEL, .box = box};
    struct ev_err err;
    if (send_request(c, &h, sizeof(h), -1, &err) < 0)
        fprintf(stderr, "envicutor: cancel box: %s\n", err.msg);
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

int psc_run(struct psc *c, uint32_t box, const struct psc_run *run, psc_abort_fn abort_fn,
            void *abort_ctx, struct sbx_result *res, bool *aborted, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    res->status = SBX_XX;
    res->exit_code = res->exit_signal = -1;
    *aborted = false;
    cleanup_free struct ps_request *req = calloc(1, PS_MAX_MSG);
    if (!req)
        return ev_fail(err, ENOMEM, "run request");
    req->h.type = PS_RUN;
    req->h.box = box;
    struct ps_run *r = &req->u.run;
    r->limits = run->limits;
    if (run->runtime)
        snprintf(r->runtime, sizeof(r->runtime), "%s", run->runtime);
    r->flags = run->mount_nix ? PS_RUN_MOUNT_NIX : 0;
    if (run->request_id && request_id_valid(run->request_id))
        snprintf(r->request_id, sizeof(r->request_id), "%s", run->request_id);
    size_t head = offsetof(struct ps_request, u) + sizeof(*r), off = head;
    char *base = (char *)req;
    char *const *lists[2] = {run->argv, run->envp};
    uint32_t counts[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; lists[k] && lists[k][i]; i++) {
            size_t n = strlen(lists[k][i]) + 1;
            if (n > PS_MAX_MSG - off || counts[k] >= (k ? PS_MAX_ENV : PS_MAX_ARGS))
                return ev_fail(err, E2BIG, "the command and its environment are too large");
            memcpy(base + off, lists[k][i], n);
            off += n;
            counts[k]++;
        }
    }
    r->argc = counts[0];
    r->envc = counts[1];
    r->strings_len = (uint32_t)(off - head);
    cleanup_close int in_fd = -1;
    if (run->output_fd > 0 || run->fresh_box || run->n_files)
        return ev_fail(err, ENOTSUP, "output_fd, fresh_box and files are not implemented yet");
    if (run->input_fd > 0) {
        in_fd = fcntl(run->input_fd, F_DUPFD_CLOEXEC, 3);
        if (in_fd < 0)
            return ev_fail(err, errno, "duplicate the input's descriptor");
        r->has_stdin = 1;
    } else if (run->input) {
        in_fd = memfd_with(run->input, run->input_len, err);
        if (in_fd < 0)
            return -1;
        if (run->input_newline && write_full(in_fd, "\n", 1) < 0)
            return ev_fail(err, errno, "write to a memfd");
        /* Sealed, the input cannot change any more, so the helper can give the box this very
         * memfd instead of a copy (privsep/helper.c, stdin_for_box). */
        if (fcntl(in_fd, F_ADD_SEALS, PS_STDIN_SEALS) < 0)
            return ev_fail(err, errno, "seal the input's memfd");
        r->has_stdin = 1;
    }
    struct ps_reply rep;
    cleanup_close int out_fd = -1;
    if (call(c, req, off, in_fd, abort_fn, abort_ctx, &rep, &out_fd, aborted, err) < 0)
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
    if (call(c, &req, offsetof(struct ps_request, u) + sizeof(req.u.nix), -1, abort_fn, abort_ctx,
             &rep, &fd, NULL, err) < 0)
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
