#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/logsafe.h"
#include "http/reply.h"
#include "http/routes.h"

/* What a connection accumulates between libmicrohttpd's calls. */
struct conn_state {
    uint64_t id;
    uint64_t t0;
    char *body;
    size_t len, cap;
    int body_fd; /* a body beyond SPILL_BYTES goes to this unlinked file as it arrives */
    bool too_large;
    bool answered; /* a response was queued before the body ended (413) */
    int denied;    /* 401 or 403: answered without routing, the body is dropped */
    const char *denied_msg;
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

static void drop_body(struct conn_state *cs)
{
    free(cs->body);
    cs->body = NULL;
    cs->len = cs->cap = 0;
    if (cs->body_fd >= 0)
        close(cs->body_fd);
    cs->body_fd = -1;
}

/* Answers a request whose body has all arrived, through the route table. */
static void dispatch(struct http_server *s, struct conn_state *cs, struct request *rq,
                     struct reply *r)
{
    bool path_known;
    const struct route *rt = route_find(rq->method, rq->path, &path_known);
    if (!rt) {
        if (path_known)
            reply_message(r, 405, "Method %s is not allowed on %.200s", rq->method, rq->path);
        else
            reply_message(r, 404, "Not found: %s %.200s", rq->method, rq->path);
        return;
    }
    if (rt->match == ROUTE_PREFIX)
        rq->rest = rq->path + strlen(rt->path);
    if (cs->body_fd >= 0 && rt->body != BODY_FILE) {
        /* Only /execute parses a spilled body from its file; the other routes' bodies are
         * small, and one that was not is read back. */
        cs->body = malloc(cs->len + 1);
        if (!cs->body || pread_full(cs->body_fd, cs->body, cs->len, 0) != (ssize_t)cs->len) {
            reply_internal(r, rq, "read a spilled body back");
            return;
        }
        cs->body[cs->len] = '\0';
        rq->body = cs->body;
        rq->body_fd = -1;
    }
    struct route_ctx ctx = {.pipeline = s->pipeline, .cfg = s->cfg};
    rt->fn(&ctx, rq, r);
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, const struct reply *r)
{
    struct MHD_Response *resp;
    const char *type;
    if (r->json) {
        char *text = json_dumps(r->json, JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (!text)
            return MHD_NO;
        resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(text);
        type = "application/json";
    } else {
        const char *t = r->text ? r->text : "";
        resp = MHD_create_response_from_buffer(strlen(t), (void *)t, MHD_RESPMEM_PERSISTENT);
        type = "text/plain; charset=utf-8";
    }
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (r->retry_after) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (r->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void log_request(uint64_t id, const char *method, const char *path, const struct reply *r,
                        uint64_t t0)
{
    double ms = (double)(monotonic_ns() - t0) / 1e6;
    /* libmicrohttpd hands over the path URL-decoded: "%0a" is a newline by now. */
    char mbuf[64], pbuf[600];
    method = log_safe(method, mbuf, sizeof(mbuf));
    path = log_safe(path, pbuf, sizeof(pbuf));
    if (r->drop)
        fprintf(stderr, "req %llu %s %s aborted by the client %.1fms\n", (unsigned long long)id,
                method, path, ms);
    else
        fprintf(stderr, "req %llu %s %s %d %.1fms\n", (unsigned long long)id, method, path,
                r->status, ms);
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
        cs->t0 = monotonic_ns();
        *con_cls = cs;
        /* API keys first, from the headers alone: a refused request's body is never kept. */
        cs->denied = auth_check(s->auth, route_role(method, url),
                                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
                                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Auth-Token"),
                                &cs->denied_msg);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
        uint64_t n;
        if (cs->denied && expect && strcasecmp(expect, "100-continue") == 0) {
            struct reply r = {0};
            reply_message(&r, cs->denied, "%s", cs->denied_msg);
            enum MHD_Result ret = send_reply(conn, &r);
            log_request(cs->id, method, url, &r, cs->t0);
            json_decref(r.json);
            return ret;
        }
        (void)expect;
        if (cl && parse_u64(cl, &n) == 0 && n > s->cfg->max_request_bytes) {
            /* Answered at once, before a byte of the body is read; libmicrohttpd then closes
             * the connection instead of reading the rest. */
            cs->too_large = cs->answered = true;
            struct reply r = {0};
            reply_message(&r, 413, "The request body is larger than %llu bytes",
                          (unsigned long long)s->cfg->max_request_bytes);
            enum MHD_Result ret = send_reply(conn, &r);
            log_request(cs->id, method, url, &r, cs->t0);
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
        if (cs->too_large || cs->len + n > s->cfg->max_request_bytes) {
            /* A body without a Content-Length (chunked) is cut off at the limit: nothing
             * beyond it is kept, what was kept is freed. libmicrohttpd cannot queue an answer
             * in the middle of a body, so the 413 goes out once the client has sent it all
             * (closing at once would leave the client without an answer). */
            cs->too_large = true;
            drop_body(cs);
            return MHD_YES;
        }
        if (cs->body_fd < 0 && cs->len + n > SPILL_BYTES) {
            cs->body_fd = spill_file(s->cfg);
            if (cs->body_fd < 0 || (cs->len && write_full(cs->body_fd, cs->body, cs->len) < 0)) {
                fprintf(stderr, "req %llu: internal error: spill the body to a file: %s\n",
                        (unsigned long long)cs->id, strerror(errno));
                return MHD_NO;
            }
            free(cs->body);
            cs->body = NULL;
            cs->cap = 0;
        }
        if (cs->body_fd >= 0) {
            if (write_full(cs->body_fd, upload_data, n) < 0) {
                fprintf(stderr, "req %llu: internal error: write the body to a file: %s\n",
                        (unsigned long long)cs->id, strerror(errno));
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
    struct reply r = {0};
    if (cs->denied) {
        reply_message(&r, cs->denied, "%s", cs->denied_msg);
    } else if (cs->too_large) {
        reply_message(&r, 413, "The request body is larger than %llu bytes",
                      (unsigned long long)s->cfg->max_request_bytes);
    } else {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct request rq = {.id = cs->id,
                             .method = method,
                             .path = url,
                             .rest = "",
                             .body = cs->body ? cs->body : "",
                             .body_len = cs->len,
                             .body_fd = cs->body_fd,
                             .conn = conn,
                             .fd = ci ? ci->connect_fd : -1};
        dispatch(s, cs, &rq, &r);
    }
    if (!r.drop && !r.json && !r.text) {
        fprintf(stderr, "req %llu: internal error: out of memory building the answer\n",
                (unsigned long long)cs->id);
        r.status = 500;
        r.text = "Internal server error";
    }
    enum MHD_Result ret = r.drop ? MHD_NO : send_reply(conn, &r);
    log_request(cs->id, method, url, &r, cs->t0);
    json_decref(r.json);
    /* The body is no longer needed; the state itself goes in on_completed. */
    drop_body(cs);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    (void)cls, (void)conn, (void)code;
    struct conn_state *cs = *con_cls;
    if (cs) {
        drop_body(cs);
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

int http_start(struct http_server *s, int listen_fd, struct pipeline *p,
               const struct ev_config *cfg, struct ev_err *err)
{
    s->pipeline = p;
    s->cfg = cfg;
    atomic_store(&s->next_id, 1);
    s->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, NULL,
        MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout, MHD_OPTION_END);
    if (!s->daemon)
        return ev_fail(err, errno, "start the HTTP server");
    return 0;
}

void http_stop(struct http_server *s)
{
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
