#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cluster/api.h"
#include "common/fileutil.h"
#include "common/logsafe.h"
#include "common/request_id.h"
#include "http/reply.h"
#include "http/routes.h"
#include "http/ws.h"

/* What a connection accumulates between libmicrohttpd's calls. */
struct conn_state {
    uint64_t id;
    char rid[REQUEST_ID_MAX + 1]; /* the request id (X-Request-Id) */
    uint64_t t0;
    char *body;
    size_t len, cap;
    int body_fd;    /* a body beyond SPILL_BYTES goes to this unlinked file as it arrives */
    uint64_t limit; /* the route's bound on the body: MAX_REQUEST_SIZE, or MAX_FILE_SIZE_UPLOAD */
    bool to_store; /* BODY_STORE: the body goes to the file store's directory from its first byte */
    bool too_large;
    bool answered;      /* a response was queued before the body ended (413) */
    int denied;         /* 401 or 403: answered without routing, the body is dropped */
    bool ws_need_token; /* /execute/ws without a key in its headers: init must carry one */
    struct ws_session *ws_pending; /* its session, until the 101 is sent (ws_upgrade) */
    const char *denied_msg;

    /* A request handled away from libmicrohttpd's threads, while the connection is suspended:
     * its handler's arguments, and the answer it leaves for the resumed connection. */
    struct http_server *s;
    struct MHD_Connection *conn;
    const struct route *route;
    struct request rq;
    struct reply reply;
    bool suspended, has_reply;
    struct exec_job *job;       /* /execute: waiting for, or holding, a submission turn */
    struct sched_ticket ticket; /* its place in the queue; tag: the request id */
    struct conn_state *ready_next;
};

/* Bodies up to this size stay in memory; a larger one is written to an unlinked file in the
 * data directory as it arrives, and /execute parses it from there (json_loadfd), so a request
 * of tens of megabytes is never held in memory as raw text next to its parsed form. */
#define SPILL_BYTES (1u << 20)

/* An unlinked file for a large body: O_TMPFILE in the data directory (disk), else a memfd. */
static int spill_file(const struct ev_config *cfg)
{
    int fd = open(cfg->data_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        fd = memfd_create("envicutor-body", MFD_CLOEXEC);
    return fd;
}

/* An upload's unnamed file in the file store's directory, which the store then links in under
 * the file's id, so its bytes are written once. */
static int store_spill_file(struct http_server *s)
{
    struct ev_err err;
    int fd = file_store_tmpfile(s->pipeline->files, &err);
    if (fd < 0)
        fprintf(stderr, "envicutor: http: %s\n", err.msg);
    return fd;
}

static void drop_body(struct conn_state *cs)
{
    free(cs->body);
    cs->body = NULL;
    cs->len = cs->cap = 0;
    if (cs->body_fd >= 0)
        close(cs->body_fd);
    cs->body_fd = -1;
}

/* The route of a request whose body has all arrived, or NULL with the answer in r. */
static const struct route *route_of(struct conn_state *cs, struct request *rq, struct reply *r)
{
    bool path_known;
    const struct route *rt = route_find(rq->method, rq->path, &path_known);
    if (!rt) {
        if (path_known)
            reply_message(r, 405, "Method %s is not allowed on %.200s", rq->method, rq->path);
        else
            reply_message(r, 404, "Not found: %s %.200s", rq->method, rq->path);
        return NULL;
    }
    if (rt->match == ROUTE_PREFIX)
        rq->rest = rq->path + strlen(rt->path);
    if (cs->body_fd >= 0 && rt->body == BODY_MEMORY) {
        /* Only /execute parses a spilled body from its file; the other routes' bodies are
         * small, and one that was not is read back. */
        cs->body = malloc(cs->len + 1);
        if (!cs->body || pread_full(cs->body_fd, cs->body, cs->len, 0) != (ssize_t)cs->len) {
            reply_internal(r, rq, "read a spilled body back");
            return NULL;
        }
        cs->body[cs->len] = '\0';
        rq->body = cs->body;
        rq->body_fd = -1;
    }
    return rt;
}

static struct route_ctx route_ctx(const struct http_server *s)
{
    return (struct route_ctx){
        .pipeline = s->pipeline, .cfg = s->cfg, .subs = s->subs, .cluster = s->cluster};
}

/* Hands the suspended connection back to libmicrohttpd with its answer in cs->reply; the
 * access handler is called again and sends it. */
static void finish_suspended(struct conn_state *cs)
{
    cs->has_reply = true;
    MHD_resume_connection(cs->conn);
}

/* ---- /execute: waiting in the queue without a thread ------------------------------------ */

static void watch_del(struct http_server *s, struct conn_state *cs)
{
    /* ENOENT: the registration was a one-shot that fired, or never made; both are fine */
    if (cs->rq.fd >= 0)
        epoll_ctl(s->watch_fd, EPOLL_CTL_DEL, cs->rq.fd, NULL);
}

/* Called by the scheduler, with its lock held, when a waiting job leaves the queue. */
static void on_ticket(struct sched_ticket *t)
{
    struct conn_state *cs = (struct conn_state *)((char *)t - offsetof(struct conn_state, ticket));
    struct http_server *s = cs->s;
    pthread_mutex_lock(&s->mu);
    cs->ready_next = NULL;
    if (s->ready_tail)
        s->ready_tail->ready_next = cs;
    else
        s->ready_head = cs;
    s->ready_tail = cs;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void *worker_main(void *arg)
{
    struct http_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->ready_head && !s->closing)
            pthread_cond_wait(&s->cv, &s->mu);
        struct conn_state *cs = s->ready_head;
        if (cs) {
            s->ready_head = cs->ready_next;
            if (!s->ready_head)
                s->ready_tail = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        if (!cs)
            return NULL; /* closing, and nothing left to answer */
        watch_del(s, cs);
        struct route_ctx ctx = route_ctx(s);
        pipeline_set_request_id(cs->rid);
        if (cs->ticket.granted)
            execute_run(&ctx, cs->job, &cs->rq, &cs->reply);
        else
            reply_pipe_status(&cs->reply, &cs->rq, PIPE_STOPPING, NULL);
        pipeline_set_request_id(NULL);
        finish_suspended(cs);
    }
}

/* Waiting clients that hang up: their jobs leave the queue (SPEC §5), and their connections
 * are closed without an answer. Only the hang-up is watched (EPOLLRDHUP, not EPOLLIN), so
 * that a request the client pipelined behind is not taken for one. */
static void *watcher_main(void *arg)
{
    struct http_server *s = arg;
    struct epoll_event ev[64];
    for (;;) {
        int n = epoll_wait(s->watch_fd, ev, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "envicutor: http: epoll_wait: %s\n", strerror(errno));
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0)
                return NULL; /* http_stop */
            if (s->cluster) {
                struct conn_state *cs = cluster_withdraw(s->cluster, ev[i].data.u64);
                if (cs) {
                    cs->reply.drop = true;
                    finish_suspended(cs);
                }
                continue;
            }
            /* By tag, not by pointer: a job granted meanwhile may be gone already. */
            struct sched_ticket *t = pipeline_withdraw(s->pipeline, ev[i].data.u64);
            if (!t)
                continue; /* granted: the run itself watches its client */
            struct conn_state *cs =
                (struct conn_state *)((char *)t - offsetof(struct conn_state, ticket));
            cs->reply.drop = true;
            finish_suspended(cs);
        }
    }
}

/* Watches a suspended request's client for a hang-up (watcher_main). */
static void watch_add(struct http_server *s, struct conn_state *cs)
{
    if (cs->rq.fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.u64 = cs->id};
    if (epoll_ctl(s->watch_fd, EPOLL_CTL_ADD, cs->rq.fd, &ev) < 0 &&
        (errno != EEXIST || epoll_ctl(s->watch_fd, EPOLL_CTL_MOD, cs->rq.fd, &ev) < 0))
        fprintf(stderr, "req %s: cannot watch the client for a hang-up: %s\n", cs->rid,
                strerror(errno));
}

/* ---- /execute on an API node of a cluster: a job in Redis (cluster/api.h) ---------------- */

/* Called from the cluster's result thread with the job's answer. */
static void on_cluster_answer(void *ctx, int status, char *json, size_t len)
{
    (void)len;
    struct conn_state *cs = ctx;
    watch_del(cs->s, cs);
    if (json) {
        cs->reply.status = status;
        cs->reply.owned_text = json; /* a JSON text: sent as it came from the worker */
        cs->reply.content_type = "application/json";
    } else {
        reply_internal(&cs->reply, &cs->rq, "out of memory taking a job's answer");
    }
    finish_suspended(cs);
}

/* Checked here as on one node; queued with the body as the client sent it, which the worker
 * checks again against its own runtimes. */
static void queue_cluster(struct http_server *s, struct conn_state *cs)
{
    char flags[64];
    request_flags_text(&cs->rq, flags, sizeof(flags));
    cs->suspended = true;
    MHD_suspend_connection(cs->conn);
    watch_add(s, cs);
    struct ev_err err;
    if (cluster_submit(s->cluster, cs->id, cs->rid, flags, cs->body ? cs->body : "", cs->len,
                       cs->body_fd, on_cluster_answer, cs, &err) < 0) {
        watch_del(s, cs);
        fprintf(stderr, "req %s: not queued: %s\n", cs->rid, err.msg);
        reply_message(&cs->reply, 503, "%s", err.msg);
        cs->reply.retry_after = 1;
        finish_suspended(cs);
    }
}

/* Queues a checked /execute request; the connection is suspended until its answer is ready.
 * Suspended first, so that no worker can resume it before it is. */
static void queue_execute(struct http_server *s, struct conn_state *cs, struct exec_job *job)
{
    cs->job = job;
    cs->ticket = (struct sched_ticket){.notify = on_ticket, .tag = cs->id};
    /* A waiting request holds its body: in memory when small (its parsed form now), in its
     * file when spilled. The raw text in memory is no longer needed. */
    if (cs->body_fd >= 0)
        cs->ticket.spilled = cs->len;
    else
        cs->ticket.mem = cs->len;
    free(cs->body);
    cs->body = NULL;
    cs->rq.body = "";
    cs->cap = 0;
    cs->suspended = true;
    MHD_suspend_connection(cs->conn);
    watch_add(s, cs);
    enum pipe_status st = pipeline_enqueue(s->pipeline, &cs->ticket);
    if (st != PIPE_OK) {
        watch_del(s, cs);
        reply_pipe_status(&cs->reply, &cs->rq, st, NULL);
        finish_suspended(cs);
    } else if (cs->ticket.granted) {
        on_ticket(&cs->ticket);
    }
}

/* ---- long work in a thread of its own ---------------------------------------------------- */

static void *handler_main(void *arg)
{
    struct conn_state *cs = arg;
    struct http_server *s = cs->s;
    struct route_ctx ctx = route_ctx(s);
    pipeline_set_request_id(cs->rid);
    cs->route->fn(&ctx, &cs->rq, &cs->reply);
    pthread_mutex_lock(&s->mu);
    finish_suspended(cs);
    /* Under the lock: http_stop stops the daemon once this count is 0, and the resume above
     * must come before. */
    if (--s->threads == 0)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

#define HANDLER_STACK (1u << 20)

static void run_in_thread(struct http_server *s, struct conn_state *cs)
{
    cs->suspended = true;
    MHD_suspend_connection(cs->conn);
    pthread_mutex_lock(&s->mu);
    int e = s->closing ? ECANCELED : 0;
    pthread_attr_t a;
    pthread_t th;
    if (!e) {
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, HANDLER_STACK);
        e = pthread_create(&th, &a, handler_main, cs);
        pthread_attr_destroy(&a);
        if (!e)
            s->threads++;
    }
    pthread_mutex_unlock(&s->mu);
    if (e == ECANCELED) {
        reply_pipe_status(&cs->reply, &cs->rq, PIPE_STOPPING, NULL);
        finish_suspended(cs);
    } else if (e) {
        char why[128];
        snprintf(why, sizeof(why), "start a thread for the request: %s", strerror(e));
        reply_internal(&cs->reply, &cs->rq, why);
        finish_suspended(cs);
    }
}

/* Sends r; a file body's descriptor is the response's from here on (libmicrohttpd closes it,
 * sending it with sendfile), or closed here when no response could be made. */
static enum MHD_Result send_reply(struct MHD_Connection *conn, struct reply *r, const char *rid)
{
    struct MHD_Response *resp;
    const char *type;
    if (r->has_file) {
        r->has_file = false;
        resp = MHD_create_response_from_fd64(r->file_size, r->file_fd);
        if (!resp)
            close(r->file_fd);
        type = "application/octet-stream";
    } else if (r->json) {
        char *text = json_dumps(r->json, JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (!text)
            return MHD_NO;
        resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(text);
        type = "application/json";
    } else if (r->owned_text) {
        resp = MHD_create_response_from_buffer(strlen(r->owned_text), r->owned_text,
                                               MHD_RESPMEM_MUST_COPY);
        type = "text/plain; charset=utf-8";
    } else {
        const char *t = r->text ? r->text : "";
        resp = MHD_create_response_from_buffer(r->text_len ? r->text_len : strlen(t), (void *)t,
                                               MHD_RESPMEM_PERSISTENT);
        type = "text/plain; charset=utf-8";
    }
    if (r->content_type)
        type = r->content_type;
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "X-Request-Id", rid);
    if (r->retry_after) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (r->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    for (size_t i = 0; i < r->n_headers; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The one line per request: its id, method, path, status and duration. Nothing of a body is
 * ever logged (a submission's source, input and output stay out of the log). */
static void log_request(const char *rid, const char *method, const char *path,
                        const struct reply *r, uint64_t t0)
{
    metrics_request(method, path, r->drop ? 0 : r->status);
    double ms = (double)(monotonic_ns() - t0) / 1e6;
    /* libmicrohttpd hands over the path URL-decoded: "%0a" is a newline by now. */
    char mbuf[64], pbuf[600];
    method = log_safe(method, mbuf, sizeof(mbuf));
    path = log_safe(path, pbuf, sizeof(pbuf));
    if (r->drop)
        fprintf(stderr, "req %s %s %s aborted by the client %.1fms\n", rid, method, path, ms);
    else
        fprintf(stderr, "req %s %s %s %d %.1fms\n", rid, method, path, r->status, ms);
}

/* Sends r (or closes the connection when the client is gone) and logs the request. */
static enum MHD_Result answer(struct conn_state *cs, struct MHD_Connection *conn,
                              const char *method, const char *url, struct reply *r)
{
    if (!r->drop && !r->json && !r->text && !r->owned_text && !r->has_file) {
        fprintf(stderr, "req %s: internal error: out of memory building the answer\n", cs->rid);
        r->status = 500;
        r->text = "Internal server error";
    }
    if (r->drop && r->has_file) {
        close(r->file_fd);
        r->has_file = false;
    }
    enum MHD_Result ret = r->drop ? MHD_NO : send_reply(conn, r, cs->rid);
    log_request(cs->rid, method, url, r, cs->t0);
    json_decref(r->json);
    r->json = NULL;
    free(r->owned_text);
    r->owned_text = NULL;
    for (size_t i = 0; i < r->n_headers; i++)
        free(r->headers[i].value);
    r->n_headers = 0;
    /* The body is no longer needed; the state itself goes in on_completed. */
    drop_body(cs);
    cs->answered = true;
    return ret;
}

static void reply_too_large(struct reply *r, const struct conn_state *cs)
{
    if (cs->to_store)
        reply_message(r, 413, "The file is larger than %llu bytes (MAX_FILE_SIZE_UPLOAD)",
                      (unsigned long long)cs->limit);
    else
        reply_message(r, 413, "The request body is larger than %llu bytes",
                      (unsigned long long)cs->limit);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return MHD_NO;
        cs->id = atomic_fetch_add(&s->next_id, 1);
        cs->body_fd = -1;
        atomic_fetch_add(&s->active, 1);
        cs->t0 = monotonic_ns();
        const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (request_id_valid(given))
            snprintf(cs->rid, sizeof(cs->rid), "%s", given);
        else
            request_id_make(cs->rid, s->rid_prefix, cs->id);
        *con_cls = cs;
        bool known;
        const struct route *rt = route_find(method, url, &known);
        cs->to_store = rt && rt->body == BODY_STORE;
        cs->limit = cs->to_store ? s->cfg->max_file_upload : s->cfg->max_request_bytes;
        /* API keys first, from the headers alone: a refused request's body is never kept. */
        cs->denied = auth_check(s->auth, route_role(method, url),
                                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
                                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Auth-Token"),
                                &cs->denied_msg);
        if (cs->denied == 401 && rt && rt->run == RUN_UPGRADE &&
            !MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization") &&
            !MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Auth-Token")) {
            /* a browser cannot set headers on a WebSocket: the key comes in init */
            cs->denied = 0;
            cs->ws_need_token = true;
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
        uint64_t n;
        if (cs->denied && expect && strcasecmp(expect, "100-continue") == 0) {
            struct reply r = {0};
            reply_message(&r, cs->denied, "%s", cs->denied_msg);
            enum MHD_Result ret = send_reply(conn, &r, cs->rid);
            log_request(cs->rid, method, url, &r, cs->t0);
            json_decref(r.json);
            return ret;
        }
        (void)expect;
        if (cl && parse_u64(cl, &n) == 0 && n > cs->limit) {
            /* Answered at once, before a byte of the body is read; libmicrohttpd then closes
             * the connection instead of reading the rest. */
            cs->too_large = cs->answered = true;
            struct reply r = {0};
            reply_too_large(&r, cs);
            enum MHD_Result ret = send_reply(conn, &r, cs->rid);
            log_request(cs->rid, method, url, &r, cs->t0);
            json_decref(r.json);
            return ret;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (cs->denied || cs->answered)
            return MHD_YES;
        if (cs->too_large || cs->len + n > cs->limit) {
            /* A body without a Content-Length (chunked) is cut off at the limit: nothing
             * beyond it is kept, what was kept is freed. libmicrohttpd cannot queue an answer
             * in the middle of a body, so the 413 goes out once the client has sent it all
             * (closing at once would leave the client without an answer). */
            cs->too_large = true;
            drop_body(cs);
            return MHD_YES;
        }
        if (cs->body_fd < 0 && (cs->to_store || cs->len + n > SPILL_BYTES)) {
            cs->body_fd = cs->to_store ? store_spill_file(s) : spill_file(s->cfg);
            if (cs->body_fd < 0 || (cs->len && write_full(cs->body_fd, cs->body, cs->len) < 0)) {
                fprintf(stderr, "req %s: internal error: spill the body to a file: %s\n", cs->rid,
                        strerror(errno));
                return MHD_NO;
            }
            free(cs->body);
            cs->body = NULL;
            cs->cap = 0;
        }
        if (cs->body_fd >= 0) {
            if (write_full(cs->body_fd, upload_data, n) < 0) {
                fprintf(stderr, "req %s: internal error: write the body to a file: %s\n", cs->rid,
                        strerror(errno));
                return MHD_NO;
            }
            cs->len += n;
            return MHD_YES;
        }
        if (cs->len + n + 1 > cs->cap) {
            size_t cap = cs->cap ? cs->cap : 4096;
            while (cap < cs->len + n + 1)
                cap *= 2;
            char *p = realloc(cs->body, cap);
            if (!p)
                return MHD_NO;
            cs->body = p;
            cs->cap = cap;
        }
        memcpy(cs->body + cs->len, upload_data, n);
        cs->len += n;
        cs->body[cs->len] = '\0';
        return MHD_YES;
    }

    if (cs->answered)
        return MHD_YES;
    if (cs->suspended)
        return cs->has_reply ? answer(cs, conn, method, url, &cs->reply) : MHD_YES;
    struct reply r = {0};
    if (cs->denied) {
        reply_message(&r, cs->denied, "%s", cs->denied_msg);
    } else if (cs->too_large) {
        reply_too_large(&r, cs);
    } else {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        cs->s = s;
        cs->conn = conn;
        cs->rq = (struct request){.id = cs->id,
                                  .rid = cs->rid,
                                  .method = method,
                                  .path = url,
                                  .rest = "",
                                  .body = cs->body ? cs->body : "",
                                  .body_len = cs->len,
                                  .body_fd = cs->body_fd,
                                  .conn = conn,
                                  .fd = ci ? ci->connect_fd : -1};
        const struct route *rt = route_of(cs, &cs->rq, &r);
        struct route_ctx ctx = route_ctx(s);
        if (rt && rt->run == RUN_INLINE) {
            rt->fn(&ctx, &cs->rq, &r);
        } else if (rt && rt->run == RUN_UPGRADE) {
            if (ws_upgrade(s->ws, conn, &cs->rq, cs->ws_need_token, &cs->ws_pending, &r)) {
                log_request(cs->rid, method, url, &r, cs->t0);
                cs->answered = true;
                return MHD_YES;
            }
        } else if (rt && rt->run == RUN_THREAD) {
            cs->route = rt;
            run_in_thread(s, cs);
            return MHD_YES;
        } else if (rt) {
            struct exec_job *job = execute_prepare(&ctx, &cs->rq, &r);
            if (job && s->cluster) {
                exec_job_free(job);
                queue_cluster(s, cs);
                return MHD_YES;
            }
            if (job) {
                queue_execute(s, cs, job);
                return MHD_YES;
            }
        }
    }
    return answer(cs, conn, method, url, &r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    (void)conn, (void)code;
    struct http_server *s = cls;
    struct conn_state *cs = *con_cls;
    if (cs) {
        atomic_fetch_sub(&s->active, 1);
        if (cs->ws_pending)
            ws_upgrade_abandon(cs->ws_pending);
        drop_body(cs);
        exec_job_free(cs->job);
        json_decref(cs->reply.json);
        free(cs);
        *con_cls = NULL;
    }
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    fputs("envicutor: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* Descriptors kept for what is not a connection: the helper's socket, the database, spilled
 * bodies and files of the requests being answered, the epoll sets, libraries. */
#define FD_RESERVE 256

/* The server may hold as many connections as descriptors: the soft limit is raised to the hard
 * one (raising the hard one needs CAP_SYS_RESOURCE, which the server does not keep). */
static unsigned connection_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024 - FD_RESERVE;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = rl.rlim_max;
        else
            fprintf(stderr, "envicutor: raise the descriptor limit to %llu: %s\n",
                    (unsigned long long)rl.rlim_max, strerror(errno));
    }
    rlim_t n = rl.rlim_cur == RLIM_INFINITY ? 1u << 20 : rl.rlim_cur;
    if (n > 1u << 20)
        n = 1u << 20;
    return n > 2 * FD_RESERVE ? (unsigned)(n - FD_RESERVE) : (unsigned)(n / 2);
}

/* What the acceptor does while the process is out of descriptors (or memory): waits this
 * long before it tries again, leaving the connections in the listening socket's backlog. */
#define ACCEPT_BACKOFF_MS 100

static void *acceptor_main(void *arg)
{
    struct http_server *s = arg;
    struct pollfd pf[2] = {{.fd = s->listen_fd, .events = POLLIN},
                           {.fd = s->accept_wake, .events = POLLIN}};
    int timeout = -1;
    unsigned long refused = 0;
    for (;;) {
        /* during a back-off only the wake-up is watched: the backlog stays readable */
        int n = poll(timeout < 0 ? pf : pf + 1, timeout < 0 ? 2 : 1, timeout);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "envicutor: http: poll the listening socket: %s\n", strerror(errno));
            timeout = ACCEPT_BACKOFF_MS;
            continue;
        }
        if (pf[1].revents & POLLIN)
            return NULL;
        timeout = -1;
        for (;;) {
            struct sockaddr_storage addr;
            socklen_t len = sizeof(addr);
            int fd =
                accept4(s->listen_fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                    continue;
                /* EMFILE, ENFILE, ENOBUFS, ENOMEM: try again when some are freed */
                fprintf(stderr, "envicutor: http: accept a connection: %s (again in %d ms)\n",
                        strerror(errno), ACCEPT_BACKOFF_MS);
                timeout = ACCEPT_BACKOFF_MS;
                break;
            }
            /* libmicrohttpd owns fd from here, and closes it when it refuses it (every thread
             * holds its share of MHD_OPTION_CONNECTION_LIMIT) */
            if (MHD_add_connection(s->daemon, fd, (struct sockaddr *)&addr, len) != MHD_YES &&
                (refused++ & 1023) == 0)
                fprintf(stderr, "envicutor: http: a connection was refused: %s (%lu so far)\n",
                        strerror(errno), refused);
        }
    }
}

/* libmicrohttpd's threads: its epoll loop and the access handler never block for long, so one
 * per core is enough. */
#define MHD_THREADS 2

int http_start(struct http_server *s, int listen_fd, struct pipeline *p,
               const struct ev_config *cfg, struct ev_err *err)
{
    s->pipeline = p;
    s->cfg = cfg;
    atomic_store(&s->next_id, 1);
    /* not a secret: only keeps ids from repeating across restarts */
    if (getrandom(&s->rid_prefix, sizeof(s->rid_prefix), GRND_NONBLOCK) != sizeof(s->rid_prefix))
        s->rid_prefix = (uint32_t)monotonic_ns() ^ (uint32_t)getpid();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->watch_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->watch_fd < 0)
        return ev_fail(err, errno, "epoll_create1");
    s->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (s->wake_fd < 0)
        return ev_fail(err, errno, "eventfd");
    struct epoll_event wev = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(s->watch_fd, EPOLL_CTL_ADD, s->wake_fd, &wev) < 0)
        return ev_fail(err, errno, "epoll_ctl");
    int e = pthread_create(&s->watcher, NULL, watcher_main, s);
    if (e)
        return ev_fail(err, e, "start the HTTP server's watcher");
    s->watcher_started = true;
    s->workers = calloc(cfg->max_concurrent, sizeof(*s->workers));
    if (!s->workers)
        return ev_fail(err, ENOMEM, "start the HTTP server's workers");
    for (; s->n_workers < cfg->max_concurrent; s->n_workers++) {
        e = pthread_create(&s->workers[s->n_workers], NULL, worker_main, s);
        if (e)
            return ev_fail(err, e, "start the HTTP server's workers");
    }
    if (cfg->redis_url[0] && !s->cluster) {
        s->cluster = cluster_api_start(cfg, err);
        if (!s->cluster)
            return -1;
    }
    struct route_ctx rctx = route_ctx(s);
    s->ws = ws_hub_start(&rctx, s->auth, err);
    if (!s->ws)
        return -1;
    s->max_connections = connection_limit();
    /* The server accepts connections itself and hands them to libmicrohttpd, rather than give
     * it the listening socket: libmicrohttpd 0.9.75's MHD_quiesce_daemon races with its own
     * epoll threads over removing that socket from their sets, and aborts the process
     * ("Failed to remove listen FD from epoll set") when it loses, at a graceful stop under
     * load. Stopping a thread of our own has no such race. */
    s->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC |
            MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)MHD_THREADS, MHD_OPTION_CONNECTION_LIMIT, s->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout, MHD_OPTION_END);
    if (!s->daemon)
        return ev_fail(err, errno, "start the HTTP server");
    int fl = fcntl(listen_fd, F_GETFL);
    if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return ev_fail(err, errno, "make the listening socket non-blocking");
    s->accept_wake = eventfd(0, EFD_CLOEXEC);
    if (s->accept_wake < 0)
        return ev_fail(err, errno, "eventfd");
    s->listen_fd = listen_fd;
    e = pthread_create(&s->acceptor, NULL, acceptor_main, s);
    if (e) {
        s->listen_fd = -1;
        return ev_fail(err, e, "start the HTTP server's acceptor");
    }
    s->acceptor_started = true;
    fprintf(stderr, "envicutor: up to %u connections\n", s->max_connections);
    return 0;
}

void http_quiesce(struct http_server *s)
{
    if (!s->acceptor_started)
        return;
    uint64_t one = 1;
    if (write(s->accept_wake, &one, sizeof(one)) != sizeof(one)) {
        /* an eventfd's counter cannot overflow from one write: this does not happen */
        fprintf(stderr, "envicutor: http: wake the acceptor: %s\n", strerror(errno));
        abort();
    }
    pthread_join(s->acceptor, NULL);
    s->acceptor_started = false;
    if (close(s->listen_fd) < 0)
        fprintf(stderr, "envicutor: http: close the listening socket: %s\n", strerror(errno));
    s->listen_fd = -1;
    close(s->accept_wake);
    s->accept_wake = -1;
}

bool http_wait_answered(struct http_server *s, uint64_t deadline_ns)
{
    while (atomic_load(&s->active) > 0) {
        if (monotonic_ns() >= deadline_ns)
            return false;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL); /* EINTR only shortens a slice */
    }
    return true;
}

void http_stop(struct http_server *s)
{
    http_quiesce(s); /* when the stop was not a graceful one: no new connection from here */
    /* The pipeline was stopped: every waiting job was refused and handed to the workers. */
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
    pthread_mutex_lock(&s->mu);
    while (s->threads > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (s->watcher_started) {
        uint64_t one = 1;
        if (write(s->wake_fd, &one, sizeof(one)) != sizeof(one))
            fprintf(stderr, "envicutor: http: wake the watcher: %s\n", strerror(errno));
        else
            pthread_join(s->watcher, NULL);
        s->watcher_started = false;
    }
    /* Every WebSocket is closed (its run killed: the pipeline stopped) and handed back. */
    ws_hub_stop(s->ws);
    s->ws = NULL;
    /* what still waits for a worker is answered 503 */
    cluster_api_stop(s->cluster);
    s->cluster = NULL;
    /* Every suspended connection has been resumed by now: libmicrohttpd must not be stopped
     * with one. */
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
