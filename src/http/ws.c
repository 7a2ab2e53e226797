#include "http/ws.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "common/base64.h"
#include "common/fileutil.h"
#include "common/request_id.h"
#include "common/sha1.h"
#include "common/utf8.h"
#include "format/stage_json.h"
#include "http/request.h"

/* Bounds of one session's memory (docs/websocket.md). A pipe is read only while less than
 * OUT_HIGH bytes wait for the client; the socket is read only while less than IN_HIGH bytes of
 * stdin wait for the program. A message after init is at most MAX_MSG bytes; init itself may
 * be as large as an /execute body. */
#define OUT_HIGH (64u * 1024)
#define IN_HIGH (64u * 1024)
#define MAX_MSG (1u << 20)
#define CHUNK 16384
#define POSITION_EVERY_MS 100

#define CLUSTER_NO_WS                                                                              \
    "Interactive execution (/execute/ws) is not available on an API node of a cluster: this "      \
    "node runs no code. Use POST /execute or POST /submissions, which the cluster's workers run"

enum phase { P_INIT, P_QUEUED, P_RUNNING, P_FINISHED };
enum watch_kind { W_SOCK, W_IN, W_OUT, W_ERR, W_KINDS };

enum ev_type { EV_GRANTED, EV_BEGIN, EV_END, EV_DONE };

/* What a session's run thread (or the scheduler) tells the loop, in order. */
struct ws_event {
    enum ev_type type;
    enum stage stage;
    bool granted, has_res;
    uint32_t box;
    int fds[3];
    struct sbx_result res; /* outputs empty: they went through the pipes */
    enum pipe_status st;
    char msg[256];
    struct ws_event *next;
};

struct ws_session;
struct watch {
    struct ws_session *s;
    enum watch_kind kind;
    uint32_t mask; /* registered events; 0: not in the epoll set */
};

struct ws_session {
    struct ws_hub *hub;
    uint64_t id;
    char rid[REQUEST_ID_MAX + 1];
    int fd;
    struct MHD_UpgradeResponseHandle *urh;
    struct ws_session **pending;            /* the connection's hold on s until the 101 is sent */
    wslay_event_context_ptr ws;             /* NULL while the session is idle (ws_ctx) */
    uint64_t rx_bytes, rx_framed, rx_frame; /* what the context read, and framed */
    bool rx_msg_open;                       /* a fragmented message is under way */
    char *extra; /* bytes that came with the handshake, read before the socket */
    size_t extra_len, extra_off;
    bool need_token;
    enum phase phase;
    bool gone;           /* the socket is done with: nothing more is read or sent */
    bool closing;        /* nothing more is sent but the close */
    uint16_t close_code; /* the close, queued once the messages before it are out */
    struct sched_ticket ticket;
    struct exec_job *job;
    unsigned ahead, ahead_sent;
    /* the run: the thread and what it posts (under the hub's lock) */
    bool running;
    atomic_bool abort;
    bool have_box;
    uint32_t box;
    struct stage_stream stream;
    struct ws_event *ev_head, *ev_tail;
    bool posted;
    struct ws_session *posted_next;
    struct ws_event *pending_end; /* an exit waiting for its stage's pipes to end */
    /* the pipes of the stage running now: the program's stdin, stdout, stderr */
    int pipe_fd[W_KINDS];
    char *in_buf;
    size_t in_len;
    bool eof_wanted;
    uint64_t out_sum;
    bool truncated[2];
    unsigned char carry[2][4];
    size_t carry_len[2];
    struct watch w[W_KINDS];
    struct ws_session *prev, *next; /* the loop's list */
    struct ws_session *incoming_next;
};

struct ws_hub {
    struct route_ctx ctx;
    const struct auth_keys *auth;
    int ep, wake;
    pthread_t loop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ws_session *incoming; /* upgraded, not yet adopted by the loop */
    struct ws_session *posted;   /* with events to read */
    unsigned runners;
    bool stopping;
    /* the loop's own */
    struct ws_session *sessions;
    unsigned queued;
    uint64_t next_positions;
    struct ws_session *dead;
};

static atomic_uint open_sessions; /* ws_open_sessions */

/* ---- handshake ---------------------------------------------------------------------------- */

void ws_accept_key(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "%s%s", key, guid);
    unsigned char d[SHA1_LEN];
    sha1(buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0, d);
    char *b = base64_encode(d, sizeof(d));
    snprintf(out, 29, "%s", b ? b : "");
    free(b);
}

/* Whether a comma-separated header value holds token (case-insensitive). */
static bool has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = e;
    }
    return false;
}

static void on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra,
                        size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh);

static void session_free(struct ws_session *s);

bool ws_upgrade(struct ws_hub *h, struct MHD_Connection *conn, const struct request *rq,
                bool need_token, struct ws_session **pending, struct reply *r)
{
    const char *up = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");
    const char *co = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection");
    const char *ver = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    if (!up || !has_token(up, "websocket") || !co || !has_token(co, "upgrade")) {
        reply_message(r, 426, "/execute/ws is a WebSocket (RFC 6455): send Upgrade: websocket");
        return false;
    }
    if (!ver || strcmp(ver, "13") != 0) {
        reply_message(r, 426, "Sec-WebSocket-Version must be 13");
        return false;
    }
    size_t klen = 0, bad;
    void *raw = key && strlen(key) == 24 ? base64_decode(key, 24, &klen, &bad) : NULL;
    free(raw);
    if (!raw || klen != 16) {
        reply_message(r, 400, "Sec-WebSocket-Key must be 16 bytes in base64");
        return false;
    }
    struct ws_session *s = calloc(1, sizeof(*s));
    if (!s) {
        reply_internal(r, rq, "out of memory");
        return false;
    }
    s->hub = h;
    s->id = rq->id;
    snprintf(s->rid, sizeof(s->rid), "%s", rq->rid);
    s->need_token = need_token;
    s->fd = -1;
    char accept[29];
    ws_accept_key(key, accept);
    struct MHD_Response *resp = MHD_create_response_for_upgrade(on_upgraded, s);
    if (!resp) {
        free(s);
        reply_internal(r, rq, "create the upgrade response");
        return false;
    }
    MHD_add_response_header(resp, "Upgrade", "websocket");
    MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept);
    MHD_add_response_header(resp, "X-Request-Id", rq->rid);
    enum MHD_Result ok = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
    MHD_destroy_response(resp);
    if (ok != MHD_YES) {
        free(s);
        reply_internal(r, rq, "queue the upgrade response");
        return false;
    }
    s->pending = pending;
    *pending = s;
    r->status = 101;
    return true;
}

void ws_upgrade_abandon(struct ws_session *s)
{
    /* nothing but the session itself: the hub never saw it (and may be gone already) */
    free(s);
}

/* ---- events from other threads ------------------------------------------------------------ */

static void wake(struct ws_hub *h)
{
    uint64_t one = 1;
    if (write(h->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
        fprintf(stderr, "envicutor: ws: wake the loop: %s\n", strerror(errno));
}

/* Any thread: appends ev to s's events; the hub's lock is held by the caller. */
static void post_locked(struct ws_session *s, struct ws_event *ev)
{
    ev->next = NULL;
    if (s->ev_tail)
        s->ev_tail->next = ev;
    else
        s->ev_head = ev;
    s->ev_tail = ev;
    if (!s->posted) {
        s->posted = true;
        s->posted_next = s->hub->posted;
        s->hub->posted = s;
    }
}

/* An event that cannot be allocated is made from memory kept for it: there is one EV_GRANTED
 * and one EV_DONE per session, so two spares are enough for those; stage events without memory
 * end the run (the abort flag). */
static struct ws_event *new_event(enum ev_type type)
{
    struct ws_event *ev = calloc(1, sizeof(*ev));
    if (ev) {
        ev->type = type;
        ev->fds[0] = ev->fds[1] = ev->fds[2] = -1;
    }
    return ev;
}

static void post(struct ws_session *s, struct ws_event *ev)
{
    pthread_mutex_lock(&s->hub->mu);
    post_locked(s, ev);
    pthread_mutex_unlock(&s->hub->mu);
    wake(s->hub);
}

/* The scheduler, with its lock held: the session's ticket left the queue. */
static void on_ticket(struct sched_ticket *t)
{
    struct ws_session *s = (struct ws_session *)((char *)t - offsetof(struct ws_session, ticket));
    struct ws_event *ev = new_event(EV_GRANTED);
    if (!ev) {
        /* Out of memory under the scheduler's lock: the turn is handed on at once. */
        if (t->granted)
            sched_release(&s->hub->ctx.pipeline->sched, SCHED_SUBMISSION);
        atomic_store(&s->abort, true);
        return;
    }
    ev->granted = t->granted;
    post(s, ev);
}

static void stream_begin(void *ctx, enum stage stage, uint32_t box, int in_w, int out_r, int err_r)
{
    struct ws_session *s = ctx;
    struct ws_event *ev = new_event(EV_BEGIN);
    if (!ev) {
        close(in_w >= 0 ? in_w : out_r);
        if (in_w >= 0)
            close(out_r);
        close(err_r);
        atomic_store(&s->abort, true);
        return;
    }
    ev->stage = stage;
    ev->box = box;
    ev->fds[0] = in_w;
    ev->fds[1] = out_r;
    ev->fds[2] = err_r;
    post(s, ev);
}

static void stream_end(void *ctx, enum stage stage, const struct sbx_result *res)
{
    struct ws_session *s = ctx;
    struct ws_event *ev = new_event(EV_END);
    if (!ev) {
        atomic_store(&s->abort, true);
        return;
    }
    ev->stage = stage;
    if (res) {
        ev->has_res = true;
        ev->res = *res;
        ev->res.out = ev->res.err = (struct sbx_output){0};
    }
    post(s, ev);
}

static bool run_aborted(void *ctx)
{
    struct ws_session *s = ctx;
    return atomic_load(&s->abort);
}

static void *run_main(void *arg)
{
    struct ws_session *s = arg;
    struct ws_hub *h = s->hub;
    struct pipeline *p = h->ctx.pipeline;
    pipeline_set_request_id(s->rid);
    struct exec_request req;
    void *archive;
    struct ws_event *done = new_event(EV_DONE);
    struct ev_err err = {0};
    enum pipe_status st;
    if (!done) {
        pipeline_release(p);
        st = PIPE_INTERNAL;
    } else if (execute_job_request(s->job, &req, &archive) < 0) {
        pipeline_release(p);
        st = PIPE_INTERNAL;
        snprintf(err.msg, sizeof(err.msg), "decode the project");
    } else {
        req.stream = &s->stream;
        struct exec_outcome o;
        st = pipeline_execute_granted(p, &req, run_aborted, s, &o, &err);
        if (st == PIPE_OK)
            exec_outcome_free(&o);
        free(archive);
    }
    pipeline_set_request_id(NULL);
    pthread_mutex_lock(&h->mu);
    if (done) {
        done->st = st;
        snprintf(done->msg, sizeof(done->msg), "%s", err.msg);
        post_locked(s, done);
    } else {
        s->running = false; /* the loop sees the run end without its event */
        atomic_store(&s->abort, true);
    }
    h->runners--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    wake(h);
    return NULL;
}

/* ---- the loop: epoll registrations --------------------------------------------------------- */

static int watch_fd(const struct ws_session *s, enum watch_kind k)
{
    return k == W_SOCK ? s->fd : s->pipe_fd[k];
}

static void watch_set(struct ws_session *s, enum watch_kind k, uint32_t mask)
{
    struct watch *w = &s->w[k];
    int fd = watch_fd(s, k);
    if (fd < 0 || mask == w->mask)
        return;
    /* An idle descriptor leaves the set: a pipe's EPOLLHUP would be reported even with no
     * events asked for, and wake the loop for nothing. */
    struct epoll_event ev = {.events = mask, .data.ptr = w};
    int op = !mask ? EPOLL_CTL_DEL : w->mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(s->hub->ep, op, fd, &ev) < 0)
        fprintf(stderr, "req %s: ws: epoll_ctl: %s\n", s->rid, strerror(errno));
    w->mask = mask;
}

static void close_pipe(struct ws_session *s, enum watch_kind k)
{
    if (s->pipe_fd[k] < 0)
        return;
    watch_set(s, k, 0);
    close(s->pipe_fd[k]);
    s->pipe_fd[k] = -1;
}

/* ---- sending ----------------------------------------------------------------------------- */

static void session_gone(struct ws_session *s);
static bool ws_ctx(struct ws_session *s);

static void send_text(struct ws_session *s, const char *text, size_t len)
{
    if (s->gone || s->closing || !ws_ctx(s))
        return;
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (wslay_event_queue_msg(s->ws, &m) != 0)
        session_gone(s);
}

static void send_json(struct ws_session *s, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(j);
    if (!text) {
        session_gone(s); /* out of memory: the client could not follow the run any more */
        return;
    }
    send_text(s, text, strlen(text));
    free(text);
}

static void send_close(struct ws_session *s, uint16_t code)
{
    if (s->gone || s->closing)
        return;
    s->closing = true;
    /* wslay sends control frames ahead of queued messages: the close waits for them */
    s->close_code = code;
}

static void send_error(struct ws_session *s, const char *msg, uint16_t code)
{
    send_json(s, json_pack("{s:s, s:s}", "type", "error", "message", msg));
    send_close(s, code);
}

static const char *const stage_names[STAGE_COUNT] = {"extract", "compile", "run"};

/* Output as the program wrote it, cut at MAX_OUTPUT_SIZE in all, UTF-8 repaired. A chunk that
 * ends inside a character keeps those bytes for the next one, so that a character split by a
 * read is not replaced. */
static void send_output(struct ws_session *s, int i, const char *buf, size_t n, bool last)
{
    unsigned char tmp[CHUNK + 4];
    size_t len = s->carry_len[i];
    memcpy(tmp, s->carry[i], len);
    memcpy(tmp + len, buf, n);
    len += n;
    size_t keep = 0;
    if (!last) {
        /* the start of an incomplete sequence among the last three bytes */
        for (size_t back = 1; back <= 3 && back <= len; back++) {
            unsigned char c = tmp[len - back];
            if ((c & 0xc0) == 0x80)
                continue;
            size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
            if (need > back)
                keep = back;
            break;
        }
    }
    memcpy(s->carry[i], tmp + len - keep, keep);
    s->carry_len[i] = keep;
    len -= keep;
    if (!len)
        return;
    size_t clean_len;
    char *clean = utf8_sanitize((const char *)tmp, len, &clean_len);
    if (!clean) {
        session_gone(s);
        return;
    }
    send_json(s, json_pack("{s:s, s:s, s:s%}", "type", "data", "stream", i ? "stderr" : "stdout",
                           "data", clean, clean_len));
    free(clean);
}

static void send_exit(struct ws_session *s, const struct ws_event *ev)
{
    if (!ev->has_res)
        return; /* the run failed or was aborted: EV_DONE says how */
    json_t *j = stage_result_json(&ev->res, 0);
    if (j) {
        json_object_set_new(j, "type", json_string("exit"));
        json_object_set_new(j, "stage", json_string(stage_names[ev->stage]));
        json_object_set_new(j, "stdout_truncated", json_boolean(s->truncated[0]));
        json_object_set_new(j, "stderr_truncated", json_boolean(s->truncated[1]));
    }
    send_json(s, j);
}

/* ---- session life -------------------------------------------------------------------------- */

/* The socket is done with (the client left, a frame was malformed, or the close went out):
 * a waiting session leaves the queue, a running one is killed. */
static void session_gone(struct ws_session *s)
{
    watch_set(s, W_SOCK, 0);
    s->gone = true;
    if (s->phase == P_QUEUED && pipeline_withdraw(s->hub->ctx.pipeline, s->id)) {
        s->phase = P_FINISHED;
        s->hub->queued--;
    }
    atomic_store(&s->abort, true);
    for (int k = W_IN; k < W_KINDS; k++)
        close_pipe(s, k);
    free(s->in_buf);
    s->in_buf = NULL;
    s->in_len = 0;
}

/* Frees s at the end of the loop's turn once nothing refers to it any more. */
static void maybe_dead(struct ws_session *s)
{
    if (!s->gone || s->phase == P_QUEUED || s->incoming_next == s)
        return;
    pthread_mutex_lock(&s->hub->mu);
    bool busy = s->running || s->posted || s->ev_head;
    pthread_mutex_unlock(&s->hub->mu);
    if (busy)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->hub->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = NULL;
    s->next = s->hub->dead;
    s->hub->dead = s;
    s->incoming_next = s; /* marks it as on the dead list */
}

static void session_free(struct ws_session *s)
{
    for (int k = W_IN; k < W_KINDS; k++)
        if (s->pipe_fd[k] >= 0)
            close(s->pipe_fd[k]);
    if (s->ws)
        wslay_event_context_free(s->ws);
    if (s->urh)
        MHD_upgrade_action(s->urh, MHD_UPGRADE_ACTION_CLOSE);
    else if (s->fd >= 0)
        close(s->fd);
    exec_job_free(s->job);
    free(s->extra);
    free(s->in_buf);
    struct ws_event *ev = s->pending_end;
    free(ev);
    atomic_fetch_sub(&open_sessions, 1);
    free(s);
}

/* ---- what the client sends ------------------------------------------------------------------ */

static void start_run(struct ws_session *s)
{
    struct ws_hub *h = s->hub;
    s->phase = P_RUNNING;
    s->stream = (struct stage_stream){stream_begin, stream_end, s};
    pthread_attr_t a;
    pthread_t th;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 1u << 20);
    pthread_mutex_lock(&h->mu);
    int e = pthread_create(&th, &a, run_main, s);
    if (!e) {
        s->running = true;
        h->runners++;
    }
    pthread_mutex_unlock(&h->mu);
    pthread_attr_destroy(&a);
    if (e) {
        pipeline_release(h->ctx.pipeline);
        fprintf(stderr, "req %s: ws: start a thread for the run: %s\n", s->rid, strerror(e));
        s->phase = P_FINISHED;
        send_error(s, "Internal server error", 1011);
        return;
    }
    send_json(s, json_pack("{s:s}", "type", "ready"));
}

static void position_of(struct sched_ticket *t, unsigned ahead, void *ctx)
{
    (void)ctx;
    if (t->notify != on_ticket)
        return;
    struct ws_session *s = (struct ws_session *)((char *)t - offsetof(struct ws_session, ticket));
    s->ahead = ahead;
}

/* Sends `queued` to each waiting session whose position fell (or that has none yet). */
static void update_positions(struct ws_hub *h)
{
    pipeline_each_waiting(h->ctx.pipeline, position_of, NULL);
    for (struct ws_session *s = h->sessions; s; s = s->next)
        if (s->phase == P_QUEUED && !s->gone && !s->closing && s->ahead < s->ahead_sent) {
            s->ahead_sent = s->ahead;
            send_json(s, json_pack("{s:s, s:i}", "type", "queued", "position", (int)s->ahead));
        }
    h->next_positions = monotonic_ns() + POSITION_EVERY_MS * 1000000ull;
}

static uint16_t close_code(int status)
{
    return status >= 500 ? (status == 503 ? 1013 : 1011) : 1008;
}

static void on_init(struct ws_session *s, json_t *msg)
{
    struct ws_hub *h = s->hub;
    if (s->need_token) {
        json_t *tok = json_object_get(msg, "token");
        const char *why = "An API key is required";
        int denied = auth_check(h->auth, AUTH_EXECUTE, NULL,
                                json_is_string(tok) ? json_string_value(tok) : NULL, &why);
        if (denied) {
            send_error(s, why, 1008);
            return;
        }
    }
    json_t *proj = json_object_get(msg, "is_project");
    if (proj && !json_is_boolean(proj)) {
        send_error(s, "is_project must be a boolean", 1008);
        return;
    }
    bool is_project = json_is_true(proj);
    json_object_del(msg, "type");
    json_object_del(msg, "token");
    json_object_del(msg, "is_project");
    char *body = json_dumps(msg, JSON_COMPACT);
    struct request rq = {.id = s->id,
                         .rid = s->rid,
                         .method = "GET",
                         .path = "/execute/ws",
                         .rest = "",
                         .body = body ? body : "",
                         .body_len = body ? strlen(body) : 0,
                         .body_fd = -1,
                         .fd = -1};
    struct reply r = {0};
    s->job = body ? execute_prepare_text(&h->ctx, &rq, is_project, &r) : NULL;
    if (!body)
        reply_internal(&r, &rq, "out of memory");
    if (!s->job) {
        json_t *m = json_object_get(r.json, "message");
        send_error(s, json_is_string(m) ? json_string_value(m) : "Internal server error",
                   close_code(r.status));
        json_decref(r.json);
        free(body);
        return;
    }
    /* later messages are stdin, signals and eof: far smaller than a source */
    wslay_event_config_set_max_recv_msg_length(s->ws, MAX_MSG);
    s->ticket = (struct sched_ticket){.notify = on_ticket, .tag = s->id, .mem = rq.body_len};
    free(body);
    enum pipe_status st = pipeline_enqueue(h->ctx.pipeline, &s->ticket);
    if (st != PIPE_OK) {
        reply_pipe_status(&r, &rq, st, NULL);
        json_t *m = json_object_get(r.json, "message");
        send_error(s, json_is_string(m) ? json_string_value(m) : "Internal server error",
                   st == PIPE_STOPPING ? 1001 : close_code(r.status));
        json_decref(r.json);
        s->phase = P_FINISHED;
        return;
    }
    if (s->ticket.granted) {
        send_json(s, json_pack("{s:s, s:i}", "type", "queued", "position", 0));
        start_run(s);
        return;
    }
    s->phase = P_QUEUED;
    h->queued++;
    s->ahead_sent = UINT32_MAX;
    update_positions(h);
}

static void add_stdin(struct ws_session *s, const char *data, size_t n)
{
    if (s->eof_wanted || !n)
        return; /* after eof, stdin is closed: the bytes have nowhere to go */
    char *b = realloc(s->in_buf, s->in_len + n);
    if (!b) {
        send_error(s, "Internal server error", 1011);
        return;
    }
    memcpy(b + s->in_len, data, n);
    s->in_buf = b;
    s->in_len += n;
}

static void on_running_message(struct ws_session *s, const char *type, json_t *msg)
{
    if (strcmp(type, "data") == 0) {
        json_t *stream = json_object_get(msg, "stream"), *data = json_object_get(msg, "data");
        if (!json_is_string(stream) || strcmp(json_string_value(stream), "stdin") != 0 ||
            !json_is_string(data)) {
            send_error(s, "A data message has \"stream\": \"stdin\" and a string \"data\"", 1008);
            return;
        }
        add_stdin(s, json_string_value(data), json_string_length(data));
    } else if (strcmp(type, "eof") == 0) {
        s->eof_wanted = true;
    } else if (strcmp(type, "signal") == 0) {
        json_t *sig = json_object_get(msg, "signal");
        const char *name = json_is_string(sig) ? json_string_value(sig) : "";
        int n = strcmp(name, "SIGKILL") == 0   ? SIGKILL
                : strcmp(name, "SIGTERM") == 0 ? SIGTERM
                : strcmp(name, "SIGINT") == 0  ? SIGINT
                                               : 0;
        if (!n) {
            send_error(s, "signal must be SIGKILL, SIGTERM or SIGINT", 1008);
            return;
        }
        if (s->have_box)
            psc_signal(s->hub->ctx.pipeline->psc, s->box, n);
    } else {
        send_error(s, "Unknown message type", 1008);
    }
}

/* ---- the framing context ------------------------------------------------------------------ */

/* wslay's context holds some 9 KB of buffers, which a session that waits (for its init, or in
 * the queue) needs only while a frame comes in or a message goes out. So the context is made
 * when there is something to read or to send, and freed once the session is idle again with
 * nothing of a frame or a message held in it: a waiting WebSocket then costs about what a
 * waiting HTTP request does. A running session keeps its context. */

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    (void)ctx;
    struct ws_session *s = user;
    uint64_t n = arg->payload_length;
    /* a client's frame is masked (4 bytes) and gives its length in the fewest bytes (RFC 6455
     * 5.2; a longer form only makes the sum fall short, and the context is then kept) */
    s->rx_frame = 2 + 4 + n + (n >= 65536 ? 8 : n >= 126 ? 2 : 0);
    if (arg->opcode == WSLAY_CONTINUATION_FRAME || arg->opcode == WSLAY_TEXT_FRAME ||
        arg->opcode == WSLAY_BINARY_FRAME)
        s->rx_msg_open = !arg->fin;
}

static void on_frame_end(wslay_event_context_ptr ctx, void *user)
{
    (void)ctx;
    struct ws_session *s = user;
    s->rx_framed += s->rx_frame;
    s->rx_frame = 0;
}

static void on_message(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                       void *user);
static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user);
static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user);

/* The session's context, made if it has none; false (and the session gone) without memory. */
static bool ws_ctx(struct ws_session *s)
{
    if (s->ws)
        return true;
    if (s->gone)
        return false;
    struct wslay_event_callbacks cb = {.recv_callback = on_recv,
                                       .send_callback = on_send,
                                       .on_frame_recv_start_callback = on_frame_start,
                                       .on_frame_recv_end_callback = on_frame_end,
                                       .on_msg_recv_callback = on_message};
    if (wslay_event_context_server_init(&s->ws, &cb, s) != 0) {
        s->ws = NULL;
        session_gone(s);
        return false;
    }
    /* init carries the source: as large as an /execute body; later messages are stdin,
     * signals and eof */
    wslay_event_config_set_max_recv_msg_length(
        s->ws, s->phase == P_INIT ? s->hub->ctx.cfg->max_request_bytes + 4096 : MAX_MSG);
    s->rx_bytes = s->rx_framed = s->rx_frame = 0;
    s->rx_msg_open = false;
    return true;
}

/* Frees the context of a waiting session that holds nothing in it. */
static void ws_ctx_release(struct ws_session *s)
{
    if (!s->ws || s->gone || s->closing || s->close_code ||
        (s->phase != P_INIT && s->phase != P_QUEUED) || wslay_event_want_write(s->ws) ||
        !wslay_event_want_read(s->ws) || s->rx_bytes != s->rx_framed || s->rx_msg_open ||
        s->extra_len)
        return;
    wslay_event_context_free(s->ws);
    s->ws = NULL;
}

static void on_message(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                       void *user)
{
    (void)ctx;
    struct ws_session *s = user;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        /* wslay answers the close; the client is leaving, and its run with it */
        s->closing = true;
        return;
    }
    if (arg->opcode != WSLAY_TEXT_FRAME) {
        if (arg->opcode == WSLAY_BINARY_FRAME)
            send_error(s, "Messages are JSON text", 1003);
        return;
    }
    if (s->closing || s->phase == P_FINISHED)
        return;
    json_error_t je;
    json_t *msg = json_loadb((const char *)arg->msg, arg->msg_length, 0, &je);
    json_t *t = json_object_get(msg, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : NULL;
    if (!type) {
        send_error(s, "A message is a JSON object with a \"type\"", 1008);
    } else if (s->phase == P_INIT) {
        if (strcmp(type, "init") == 0)
            on_init(s, msg);
        else
            send_error(s, "The first message is init", 1008);
    } else if (s->phase == P_QUEUED) {
        send_error(s, "Nothing but a close is read before ready", 1008);
        if (pipeline_withdraw(s->hub->ctx.pipeline, s->id)) {
            s->phase = P_FINISHED;
            s->hub->queued--;
        }
        atomic_store(&s->abort, true); /* a turn granted meanwhile is handed back */
    } else {
        on_running_message(s, type, msg);
    }
    json_decref(msg);
}

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    struct ws_session *s = user;
    if (s->in_len >= IN_HIGH) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK); /* the program is behind */
        return -1;
    }
    if (s->extra_off < s->extra_len) {
        size_t n = s->extra_len - s->extra_off < len ? s->extra_len - s->extra_off : len;
        memcpy(buf, s->extra + s->extra_off, n);
        s->extra_off += n;
        if (s->extra_off == s->extra_len) {
            free(s->extra);
            s->extra = NULL;
            s->extra_len = s->extra_off = 0;
        }
        s->rx_bytes += n;
        return (ssize_t)n;
    }
    ssize_t n;
    while ((n = recv(s->fd, buf, len, 0)) < 0 && errno == EINTR)
        ;
    if (n > 0) {
        s->rx_bytes += (uint64_t)n;
        return n;
    }
    wslay_event_set_error(ctx, n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
                                   ? WSLAY_ERR_WOULDBLOCK
                                   : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct ws_session *s = user;
    /* wslay sends a frame's header and its payload in two calls: MSG_MORE makes them one
     * segment (the socket has TCP_NODELAY, see on_upgraded) */
    int more = flags & WSLAY_MSG_MORE ? MSG_MORE : 0;
    ssize_t n;
    while ((n = send(s->fd, data, len, MSG_NOSIGNAL | more)) < 0 && errno == EINTR)
        ;
    if (n >= 0)
        return n;
    wslay_event_set_error(ctx, errno == EAGAIN || errno == EWOULDBLOCK
                                   ? WSLAY_ERR_WOULDBLOCK
                                   : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

/* ---- pipes ------------------------------------------------------------------------------- */

static void process_events(struct ws_session *s);

static void pump_output(struct ws_session *s, enum watch_kind k)
{
    int i = k == W_OUT ? 0 : 1;
    char buf[CHUNK];
    ssize_t n;
    while ((n = read(s->pipe_fd[k], buf, sizeof(buf))) < 0 && errno == EINTR)
        ;
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        send_output(s, i, "", 0, true);
        close_pipe(s, k);
        process_events(s); /* an exit may have waited for this end of file */
        return;
    }
    uint64_t max = s->hub->ctx.cfg->max_output_bytes;
    size_t take = (size_t)n;
    if (s->out_sum + take > max) {
        take = s->out_sum < max ? (size_t)(max - s->out_sum) : 0;
        s->truncated[i] = true; /* the rest is read and dropped, as over HTTP */
    }
    s->out_sum += take;
    if (take)
        send_output(s, i, buf, take, false);
}

static void flush_stdin(struct ws_session *s)
{
    int fd = s->pipe_fd[W_IN];
    if (fd < 0)
        return;
    while (s->in_len) {
        ssize_t n = write(fd, s->in_buf, s->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {
            /* EPIPE: the program closed its stdin or ended; what is left is dropped */
            s->in_len = 0;
            s->eof_wanted = true;
            break;
        }
        memmove(s->in_buf, s->in_buf + n, s->in_len - (size_t)n);
        s->in_len -= (size_t)n;
    }
    if (s->eof_wanted)
        close_pipe(s, W_IN);
}

/* ---- the run's events --------------------------------------------------------------------- */

static void handle_event(struct ws_session *s, struct ws_event *ev)
{
    struct ws_hub *h = s->hub;
    switch (ev->type) {
    case EV_GRANTED:
        if (s->phase == P_QUEUED)
            h->queued--;
        h->next_positions = 0; /* the queue moved: the others hear of it at once */
        if (!ev->granted) {
            s->phase = P_FINISHED;
            send_error(s, "The server is shutting down", 1001);
        } else if (s->gone || atomic_load(&s->abort)) {
            s->phase = P_FINISHED;
            pipeline_release(h->ctx.pipeline);
        } else {
            start_run(s);
        }
        break;
    case EV_BEGIN:
        s->have_box = true;
        s->box = ev->box;
        for (int k = W_IN; k < W_KINDS; k++) {
            s->pipe_fd[k] = ev->fds[k - W_IN];
            ev->fds[k - W_IN] = -1;
            if (s->pipe_fd[k] >= 0 && fcntl(s->pipe_fd[k], F_SETFL, O_NONBLOCK) < 0)
                fprintf(stderr, "req %s: ws: O_NONBLOCK: %s\n", s->rid, strerror(errno));
        }
        s->truncated[0] = s->truncated[1] = false;
        s->out_sum = 0;
        if (s->gone) {
            for (int k = W_IN; k < W_KINDS; k++)
                close_pipe(s, k);
            break;
        }
        send_json(s, json_pack("{s:s, s:s}", "type", "stage", "stage", stage_names[ev->stage]));
        flush_stdin(s);
        break;
    case EV_END:
        break; /* process_events holds it until the pipes end */
    case EV_DONE:
        s->running = false;
        s->phase = P_FINISHED;
        if (ev->st == PIPE_OK) {
            send_close(s, 1000);
        } else if (ev->st == PIPE_NO_RUNTIME) {
            send_error(s, "The runtime was deleted while the request waited", 1008);
        } else if (ev->st != PIPE_ABORTED) {
            struct request rq = {.rid = s->rid};
            struct reply r = {0};
            struct ev_err err = {0};
            snprintf(err.msg, sizeof(err.msg), "%s", ev->msg);
            reply_pipe_status(&r, &rq, ev->st, &err);
            json_t *m = json_object_get(r.json, "message");
            send_error(s, json_is_string(m) ? json_string_value(m) : "Internal server error",
                       ev->st == PIPE_STOPPING ? 1001 : 1011);
            json_decref(r.json);
        } else if (!s->gone) {
            send_close(s, 1011);
        }
        break;
    }
    for (int i = 0; i < 3; i++)
        if (ev->fds[i] >= 0)
            close(ev->fds[i]);
}

/* Handles the session's events in order. A stage's exit waits until both its output pipes
 * have ended, so that it follows every byte of that stage's output. */
static void process_events(struct ws_session *s)
{
    for (;;) {
        if (s->pending_end) {
            if (s->pipe_fd[W_OUT] >= 0 || s->pipe_fd[W_ERR] >= 0)
                return;
            close_pipe(s, W_IN);
            if (!s->gone)
                send_exit(s, s->pending_end);
            free(s->pending_end);
            s->pending_end = NULL;
        }
        pthread_mutex_lock(&s->hub->mu);
        struct ws_event *ev = s->ev_head;
        if (ev) {
            s->ev_head = ev->next;
            if (!s->ev_head)
                s->ev_tail = NULL;
        }
        pthread_mutex_unlock(&s->hub->mu);
        if (!ev)
            return;
        if (ev->type == EV_END) {
            s->pending_end = ev;
            continue;
        }
        handle_event(s, ev);
        free(ev);
    }
}

/* ---- the loop ------------------------------------------------------------------------------ */

/* After anything happened to s: sends what waits, and watches what it now may. */
static void settle(struct ws_session *s)
{
    if (!s->gone && s->close_code)
        ws_ctx(s); /* a close to send */
    for (int round = 0; s->ws && !s->gone && round < 2; round++) {
        if (wslay_event_want_write(s->ws) && wslay_event_send(s->ws) != 0) {
            session_gone(s);
        } else if (s->close_code && !wslay_event_get_queued_msg_count(s->ws)) {
            wslay_event_queue_close(s->ws, s->close_code, NULL, 0);
            s->close_code = 0;
            continue; /* and send it */
        } else if (!wslay_event_want_write(s->ws) &&
                   (wslay_event_get_close_sent(s->ws) || !wslay_event_want_read(s->ws))) {
            /* the close went out (ours, or wslay's answer to a bad frame): the TCP
             * connection ends here */
            session_gone(s);
        }
        break;
    }
    ws_ctx_release(s);
    if (s->gone) {
        watch_set(s, W_SOCK, 0);
    } else {
        /* A hang-up is watched even while the socket is not read (stdin is full), so that a
         * client that leaves still kills its run. */
        uint32_t m = EPOLLRDHUP;
        if ((!s->ws || wslay_event_want_read(s->ws)) && s->in_len < IN_HIGH)
            m |= EPOLLIN;
        if (s->ws && wslay_event_want_write(s->ws))
            m |= EPOLLOUT;
        watch_set(s, W_SOCK, m);
    }
    bool room = !s->gone && (!s->ws || wslay_event_get_queued_msg_length(s->ws) < OUT_HIGH);
    watch_set(s, W_OUT, room || s->gone ? EPOLLIN : 0);
    watch_set(s, W_ERR, room || s->gone ? EPOLLIN : 0);
    watch_set(s, W_IN, s->in_len || s->eof_wanted ? EPOLLOUT : 0);
    maybe_dead(s);
}

static void on_socket(struct ws_session *s, uint32_t events)
{
    if (s->gone)
        return;
    if ((events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) && s->in_len >= IN_HIGH) {
        session_gone(s);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
        if (!ws_ctx(s))
            return;
        if (wslay_event_recv(s->ws) != 0) {
            session_gone(s);
            return;
        }
        flush_stdin(s);
    }
}

static void adopt(struct ws_hub *h, struct ws_session *s)
{
    for (int k = 0; k < W_KINDS; k++) {
        s->w[k] = (struct watch){.s = s, .kind = k};
        s->pipe_fd[k] = -1;
    }
    s->next = h->sessions;
    if (h->sessions)
        h->sessions->prev = s;
    h->sessions = s;
    if (h->stopping)
        send_error(s, "The server is shutting down", 1001);
    /* An API node runs no code, and a job on the cluster's stream has no way to carry stdin
     * and signals in or output out as it happens (docs/cluster.md); said in the protocol's own
     * terms, after the upgrade, so that a browser's page can show why. */
    else if (h->ctx.cluster)
        send_error(s, CLUSTER_NO_WS, 1011);
    else if (s->extra_len)
        on_socket(s, EPOLLIN);
}

static void on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra,
                        size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    (void)conn, (void)con_cls;
    struct ws_session *s = cls;
    struct ws_hub *h = s->hub;
    *s->pending = NULL; /* the hub's from now on */
    s->pending = NULL;
    /* The hub keeps a duplicate of the socket and hands the connection back to libmicrohttpd
     * at once, which frees it and its memory pool (some 26 KB that a waiting session would
     * otherwise hold) and closes its descriptor without a shutdown(): the TCP connection
     * lives on in the duplicate. Without a descriptor to spare, the session keeps libmicrohttpd's
     * connection until it ends. The bytes that came with the handshake are copied below, before
     * the pool they sit in goes. */
    int fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
    s->fd = fd >= 0 ? fd : sock;
    s->urh = fd >= 0 ? NULL : urh;
    int fl = fcntl(sock, F_GETFL);
    if (fl < 0 || fcntl(sock, F_SETFL, fl | O_NONBLOCK) < 0)
        fprintf(stderr, "req %s: ws: O_NONBLOCK: %s\n", s->rid, strerror(errno));
    /* libmicrohttpd turns Nagle's algorithm back on for an upgraded socket; with it, a small
     * message sent while the client's acknowledgement of the previous one is delayed waits
     * for it (some 40 ms on Linux): every echo of an interactive program would */
    int one = 1;
    if (setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        fprintf(stderr, "req %s: ws: TCP_NODELAY: %s\n", s->rid, strerror(errno));
    if (extra_len && (s->extra = malloc(extra_len)) != NULL) {
        memcpy(s->extra, extra, extra_len);
        s->extra_len = extra_len;
    }
    if (!s->urh)
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    atomic_fetch_add(&open_sessions, 1);
    pthread_mutex_lock(&h->mu);
    s->incoming_next = h->incoming;
    h->incoming = s;
    pthread_mutex_unlock(&h->mu);
    wake(h);
}

static void *loop_main(void *arg)
{
    struct ws_hub *h = arg;
    struct epoll_event evs[64];
    for (;;) {
        int timeout = -1;
        if (h->queued) {
            uint64_t now = monotonic_ns();
            timeout = h->next_positions > now ? (int)((h->next_positions - now) / 1000000) + 1 : 0;
        }
        int n = epoll_wait(h->ep, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "envicutor: ws: epoll_wait: %s\n", strerror(errno));
            n = 0;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = evs[i].data.ptr;
            if (!w) {
                uint64_t v;
                if (read(h->wake, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    fprintf(stderr, "envicutor: ws: read the wake-up: %s\n", strerror(errno));
                continue;
            }
            struct ws_session *s = w->s;
            if (s->incoming_next == s)
                continue; /* freed at the end of this turn */
            if (w->kind == W_SOCK)
                on_socket(s, evs[i].events);
            else if (w->kind == W_IN)
                flush_stdin(s);
            else if (s->pipe_fd[w->kind] >= 0)
                pump_output(s, w->kind);
            settle(s);
        }
        pthread_mutex_lock(&h->mu);
        struct ws_session *in = h->incoming, *posted = h->posted;
        h->incoming = h->posted = NULL;
        for (struct ws_session *s = posted; s; s = s->posted_next)
            s->posted = false;
        bool stopping = h->stopping;
        pthread_mutex_unlock(&h->mu);
        while (in) {
            struct ws_session *next = in->incoming_next;
            in->incoming_next = NULL;
            adopt(h, in);
            settle(in);
            in = next;
        }
        while (posted) {
            struct ws_session *next = posted->posted_next;
            process_events(posted);
            settle(posted);
            posted = next;
        }
        if (h->queued && monotonic_ns() >= h->next_positions) {
            update_positions(h);
            for (struct ws_session *s = h->sessions; s; s = s->next)
                if (s->phase == P_QUEUED)
                    settle(s);
        }
        if (stopping) {
            for (struct ws_session *s = h->sessions, *next; s; s = next) {
                next = s->next;
                atomic_store(&s->abort, true);
                if (!s->running)
                    send_error(s, "The server is shutting down", 1001);
                settle(s);
                if (s->closing && !s->gone && !s->running)
                    session_gone(s); /* no waiting for a client that does not read */
                maybe_dead(s);
            }
        }
        while (h->dead) {
            struct ws_session *s = h->dead;
            h->dead = s->next;
            session_free(s);
        }
        if (stopping && !h->sessions) {
            pthread_mutex_lock(&h->mu);
            bool idle = !h->incoming && !h->runners;
            pthread_mutex_unlock(&h->mu);
            if (idle)
                return NULL;
        }
    }
}

/* ---- the hub ------------------------------------------------------------------------------- */

struct ws_hub *ws_hub_start(const struct route_ctx *ctx, const struct auth_keys *auth,
                            struct ev_err *err)
{
    struct ws_hub *h = calloc(1, sizeof(*h));
    if (!h) {
        ev_fail(err, ENOMEM, "the WebSocket hub");
        return NULL;
    }
    h->ctx = *ctx;
    h->auth = auth;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->ep = epoll_create1(EPOLL_CLOEXEC);
    h->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (h->ep < 0 || h->wake < 0 || epoll_ctl(h->ep, EPOLL_CTL_ADD, h->wake, &ev) < 0) {
        ev_fail(err, errno, "the WebSocket hub's epoll set");
        goto fail;
    }
    int e = pthread_create(&h->loop, NULL, loop_main, h);
    if (e) {
        ev_fail(err, e, "start the WebSocket hub");
        goto fail;
    }
    return h;
fail:
    if (h->ep >= 0)
        close(h->ep);
    if (h->wake >= 0)
        close(h->wake);
    free(h);
    return NULL;
}

void ws_hub_stop(struct ws_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_mutex_unlock(&h->mu);
    wake(h);
    pthread_join(h->loop, NULL);
    close(h->ep);
    close(h->wake);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

unsigned ws_open_sessions(void)
{
    return atomic_load(&open_sessions);
}
