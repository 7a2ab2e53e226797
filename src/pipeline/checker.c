#include "pipeline/checker.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a byte stream over memory or a descriptor ---------------------------------------------- */

#define READ_CHUNK 65536

struct reader {
    const struct check_src *src;
    char *buf; /* descriptors only */
    size_t pos, end;
    off_t off;
    bool failed;
    int errnum;
};

static int reader_init(struct reader *r, const struct check_src *src)
{
    memset(r, 0, sizeof(*r));
    r->src = src;
    if (src->fd > 0) {
        r->buf = malloc(READ_CHUNK);
        if (!r->buf)
            return -1;
    } else {
        r->end = src->len;
    }
    return 0;
}

static void reader_free(struct reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

/* The next byte, or -1 at the end (or on a failure, which r->failed records). */
static int rd_get(struct reader *r)
{
    if (r->pos < r->end)
        return (unsigned char)(r->buf ? r->buf[r->pos++] : r->src->data[r->pos++]);
    if (!r->buf || r->failed)
        return -1;
    ssize_t n;
    do
        n = pread(r->src->fd, r->buf, READ_CHUNK, r->off);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        if (n < 0) {
            r->failed = true;
            r->errnum = errno;
        }
        return -1;
    }
    r->off += n;
    r->pos = 0;
    r->end = (size_t)n;
    return (unsigned char)r->buf[r->pos++];
}

static bool is_blank(int c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static bool is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* ---- canonical streams: "lines" and "tokens" compare their canonical forms byte by byte ------ */

/* lines: each line without its trailing blanks, without the empty lines at the end. Blanks and
 * newlines are held back until content follows them (a run of blanks may be long: it is kept in
 * a growing buffer, bounded by the line it is part of). */
struct canon {
    struct reader rd;
    enum checker_kind kind;
    char *ws;
    size_t ws_len, ws_cap;
    size_t pending_nl; /* lines: newlines held back; tokens: a separator is due */
    size_t emit_pos;   /* how much of the held-back part has been given out */
    int held;          /* the content byte that released it, or -2 */
    bool at_start;     /* tokens: no token yet */
    unsigned long line, token;
    bool oom;
};

static int canon_hold(struct canon *c, int ch)
{
    if (c->ws_len == c->ws_cap) {
        size_t cap = c->ws_cap ? c->ws_cap * 2 : 64;
        char *p = realloc(c->ws, cap);
        if (!p) {
            c->oom = true;
            return -1;
        }
        c->ws = p;
        c->ws_cap = cap;
    }
    c->ws[c->ws_len++] = (char)ch;
    return 0;
}

/* The next canonical byte, or -1 at the end. */
static int canon_next(struct canon *c)
{
    for (;;) {
        if (c->held != -2) {
            /* give out what was held back, then the byte that released it */
            if (c->kind == CHECKER_LINES) {
                if (c->pending_nl) {
                    c->pending_nl--;
                    c->line++;
                    return '\n';
                }
                if (c->emit_pos < c->ws_len)
                    return (unsigned char)c->ws[c->emit_pos++];
            } else if (c->pending_nl) {
                c->pending_nl = 0;
                c->token++;
                return ' ';
            }
            int h = c->held;
            c->held = -2;
            c->ws_len = c->emit_pos = 0;
            return h;
        }
        int ch = rd_get(&c->rd);
        if (ch < 0)
            return -1;
        if (c->kind == CHECKER_LINES) {
            if (ch == '\n') {
                c->pending_nl++;
                c->ws_len = 0;
            } else if (is_blank(ch)) {
                if (canon_hold(c, ch) < 0)
                    return -1;
            } else {
                c->held = ch;
            }
        } else if (is_space(ch)) {
            if (!c->at_start)
                c->pending_nl = 1;
        } else {
            c->at_start = false;
            c->held = ch;
        }
    }
}

static int canon_init(struct canon *c, enum checker_kind kind, const struct check_src *src)
{
    memset(c, 0, sizeof(*c));
    c->kind = kind;
    c->held = -2;
    c->at_start = true;
    c->line = c->token = 1;
    return reader_init(&c->rd, src);
}

static void canon_free(struct canon *c)
{
    reader_free(&c->rd);
    free(c->ws);
}

static enum check_result read_failure(const struct reader *a, const struct reader *b, bool oom,
                                      struct ev_err *err)
{
    if (oom)
        return ev_fail(err, ENOMEM, "compare outputs"), CHECK_ERROR;
    const struct reader *f = a->failed ? a : b;
    return ev_fail(err, f->errnum, "read an output to compare"), CHECK_ERROR;
}

static enum check_result compare_canonical(enum checker_kind kind, const struct check_src *out,
                                           const struct check_src *exp, char *msg, size_t size,
                                           struct ev_err *err)
{
    struct canon a, b;
    if (canon_init(&a, kind, out) < 0 || canon_init(&b, kind, exp) < 0) {
        canon_free(&a);
        return ev_fail(err, ENOMEM, "compare outputs"), CHECK_ERROR;
    }
    enum check_result r = CHECK_AC;
    for (;;) {
        int x = canon_next(&a), y = canon_next(&b);
        if (a.rd.failed || b.rd.failed || a.oom || b.oom) {
            r = read_failure(&a.rd, &b.rd, a.oom || b.oom, err);
            break;
        }
        if (x == y && x < 0)
            break;
        if (x == y)
            continue;
        r = CHECK_WA;
        const char *what = kind == CHECKER_LINES ? "line" : "token";
        unsigned long at = kind == CHECKER_LINES ? b.line : b.token;
        if (x < 0)
            snprintf(msg, size, "the output ends early: %s %lu is missing or shorter", what, at);
        else if (y < 0)
            snprintf(msg, size, "the output goes on past the expected end (%s %lu)", what, at);
        else
            snprintf(msg, size, "%s %lu differs", what, at);
        break;
    }
    canon_free(&a);
    canon_free(&b);
    return r;
}

static enum check_result compare_exact(const struct check_src *out, const struct check_src *exp,
                                       char *msg, size_t size, struct ev_err *err)
{
    struct reader a, b;
    if (reader_init(&a, out) < 0 || reader_init(&b, exp) < 0) {
        reader_free(&a);
        return ev_fail(err, ENOMEM, "compare outputs"), CHECK_ERROR;
    }
    enum check_result r = CHECK_AC;
    for (unsigned long long at = 0;; at++) {
        int x = rd_get(&a), y = rd_get(&b);
        if (a.failed || b.failed) {
            r = read_failure(&a, &b, false, err);
            break;
        }
        if (x == y && x < 0)
            break;
        if (x != y) {
            r = CHECK_WA;
            if (x < 0)
                snprintf(msg, size, "the output ends early, at byte %llu", at);
            else if (y < 0)
                snprintf(msg, size, "the output goes on past the expected end (byte %llu)", at);
            else
                snprintf(msg, size, "byte %llu differs", at);
            break;
        }
    }
    reader_free(&a);
    reader_free(&b);
    return r;
}

/* ---- float: whole tokens, numbers compared within eps --------------------------------------- */

struct token {
    char *s;
    size_t len, cap;
};

/* Reads the next token into t: 1, 0 at the end, -1 on a failure. */
static int next_token(struct reader *r, struct token *t)
{
    int ch;
    while ((ch = rd_get(r)) >= 0 && is_space(ch))
        ;
    t->len = 0;
    if (ch < 0)
        return r->failed ? -1 : 0;
    do {
        if (t->len + 1 >= t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 64;
            char *p = realloc(t->s, cap);
            if (!p)
                return -1;
            t->s = p;
            t->cap = cap;
        }
        t->s[t->len++] = (char)ch;
    } while ((ch = rd_get(r)) >= 0 && !is_space(ch));
    t->s[t->len] = '\0';
    return r->failed ? -1 : 1;
}

/* A whole token that reads as a number (decimal or exponent form, inf, nan). */
static bool as_number(const struct token *t, double *v)
{
    if (!t->len || strlen(t->s) != t->len)
        return false;
    char *end;
    errno = 0;
    *v = strtod(t->s, &end);
    return *end == '\0' && end != t->s;
}

static bool numbers_close(double a, double b, double eps)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    double d = fabs(a - b);
    return d <= eps || d <= eps * fabs(b);
}

static void quote(char *dst, size_t size, const struct token *t)
{
    snprintf(dst, size, "%.40s%s", t->s, t->len > 40 ? "..." : "");
}

static enum check_result compare_float(double eps, const struct check_src *out,
                                       const struct check_src *exp, char *msg, size_t size,
                                       struct ev_err *err)
{
    struct reader a, b;
    struct token x = {0}, y = {0};
    if (reader_init(&a, out) < 0 || reader_init(&b, exp) < 0) {
        reader_free(&a);
        return ev_fail(err, ENOMEM, "compare outputs"), CHECK_ERROR;
    }
    enum check_result r = CHECK_AC;
    for (unsigned long n = 1;; n++) {
        int gx = next_token(&a, &x), gy = next_token(&b, &y);
        if (gx < 0 || gy < 0) {
            r = read_failure(&a, &b, !a.failed && !b.failed, err);
            break;
        }
        if (!gx && !gy)
            break;
        char qx[48], qy[48];
        if (!gx || !gy) {
            r = CHECK_WA;
            if (!gx)
                snprintf(msg, size, "the output ends early: token %lu is missing", n);
            else
                snprintf(msg, size, "the output goes on past the expected end (token %lu)", n);
            break;
        }
        double vx, vy;
        bool same = as_number(&x, &vx) && as_number(&y, &vy)
                        ? numbers_close(vx, vy, eps)
                        : x.len == y.len && memcmp(x.s, y.s, x.len) == 0;
        if (!same) {
            r = CHECK_WA;
            quote(qx, sizeof(qx), &x);
            quote(qy, sizeof(qy), &y);
            snprintf(msg, size, "token %lu: expected %s, got %s", n, qy, qx);
            break;
        }
    }
    free(x.s);
    free(y.s);
    reader_free(&a);
    reader_free(&b);
    return r;
}

enum check_result checker_compare(enum checker_kind kind, double eps,
                                  const struct check_src *output, const struct check_src *expected,
                                  char *msg, size_t msg_size, struct ev_err *err)
{
    if (msg_size)
        msg[0] = '\0';
    switch (kind) {
    case CHECKER_EXACT:
        return compare_exact(output, expected, msg, msg_size, err);
    case CHECKER_LINES:
    case CHECKER_TOKENS:
        return compare_canonical(kind, output, expected, msg, msg_size, err);
    case CHECKER_FLOAT:
        return compare_float(eps, output, expected, msg, msg_size, err);
    default:
        return ev_fail(err, EINVAL, "not a built-in checker"), CHECK_ERROR;
    }
}

static const char *const names[] = {"lines", "exact", "tokens", "float"};

int checker_from_name(const char *name)
{
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *checker_name(enum checker_kind kind)
{
    return (unsigned)kind < sizeof(names) / sizeof(names[0]) ? names[kind] : "custom";
}
