/* GET / and GET /static/NAME: the playground (web/, docs/playground.md). Its files are embedded
 * in the binary, so there is no file system behind these routes: a name either is one of the
 * embedded files or is a 404, whatever it contains. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/mhd_loader.h"
#include "http/routes.h"
#include "http/static_files.h"

const struct static_file *static_file_find(const char *name)
{
    for (size_t i = 0; i < static_files_count; i++)
        if (strcmp(static_files[i].name, name) == 0)
            return &static_files[i];
    return NULL;
}

static const char *const content_types[][2] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
};

const char *static_content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof(content_types) / sizeof(content_types[0]); i++)
        if (strcmp(dot, content_types[i][0]) == 0)
            return content_types[i][1];
    return NULL;
}

bool static_host_valid(const char *host)
{
    if (!host || !*host || strlen(host) > 255)
        return false;
    for (const char *p = host; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]", *p))
            return false;
    return true;
}

static void add_header(struct reply *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add_header(struct reply *r, const char *name, const char *fmt, ...)
{
    if (r->n_headers == REPLY_MAX_HEADERS)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *value;
    int n = vasprintf(&value, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    r->headers[r->n_headers].name = name;
    r->headers[r->n_headers].value = value;
    r->n_headers++;
}

/* The page needs nothing but its own files and the API: scripts, styles and images from this
 * origin only, no inline script or style, no frames, no plugins, no forms sent anywhere.
 * connect-src names the WebSocket's ws: and wss: origins of the host the page was loaded from,
 * because browsers before CSP Level 3 do not count them as 'self'. */
static void security_headers(struct reply *r, const struct request *rq)
{
    const char *host = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Host");
    char ws[600] = "";
    if (static_host_valid(host))
        snprintf(ws, sizeof(ws), " ws://%s wss://%s", host, host);
    add_header(r, "Content-Security-Policy",
               "default-src 'self'; connect-src 'self'%s; img-src 'self'; object-src 'none'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
               ws);
    add_header(r, "X-Content-Type-Options", "nosniff");
    add_header(r, "Referrer-Policy", "no-referrer");
    /* The names are not versioned, so a browser asks again each time (cheaply: the ETag). */
    add_header(r, "Cache-Control", "no-cache");
}

static void serve(const struct static_file *f, struct request *rq, struct reply *r)
{
    const char *type = f ? static_content_type(f->name) : NULL;
    if (!type) {
        reply_message(r, 404, "Not found: %s %.200s", rq->method, rq->path);
        return;
    }
    security_headers(r, rq);
    add_header(r, "ETag", "%s", f->etag);
    const char *inm = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "If-None-Match");
    if (inm && strstr(inm, f->etag)) {
        r->status = 304;
        r->text = "";
        return;
    }
    r->status = 200;
    r->text = (const char *)f->data;
    r->text_len = f->len;
    r->content_type = type;
}

void route_static_index(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    (void)ctx;
    serve(static_file_find("index.html"), rq, r);
}

void route_static(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    (void)ctx;
    serve(static_file_find(rq->rest), rq, r);
}
