/* POST /submissions[?is_project=true] and GET /submissions/{token} (SPEC §10, docs/async.md):
 * only translation; the store and the runner are in submissions.c and submissions_local.c. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/routes.h"
#include "http/submissions.h"

/* The body's "callback_url": 0 with *url (malloc'ed, or NULL when absent), or -1 with the 400
 * in r. A body that is not a JSON object is left to the /execute parser's messages. A spilled
 * body (over 1 MiB) is parsed once here for it, and again when its turn comes, as /execute's
 * are; its memory is given back in between. */
static int callback_url_of(const struct submissions *s, const struct request *rq, char **url,
                           struct reply *r)
{
    *url = NULL;
    json_error_t je;
    json_t *root;
    if (rq->body_fd >= 0)
        root = lseek(rq->body_fd, 0, SEEK_SET) == 0
                   ? json_loadfd(rq->body_fd, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je)
                   : NULL;
    else
        root = json_loadb(rq->body, rq->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    json_t *v = json_object_get(root, "callback_url");
    int rc = 0;
    struct ev_err err;
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            reply_message(r, 400, "callback_url must be a string");
            rc = -1;
        } else if (subs_check_callback(s, json_string_value(v), &err) < 0) {
            reply_message(r, 400, "%s", err.msg);
            rc = -1;
        } else if (!(*url = strdup(json_string_value(v)))) {
            reply_internal(r, rq, "out of memory");
            rc = -1;
        }
    }
    json_decref(root);
    return rc;
}

void route_submissions_post(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    struct sub_runner *runner = subs_runner(ctx->subs);
    if (!runner) {
        reply_message(r, 503, "Asynchronous submissions are not available on this server");
        return;
    }
    char *url;
    if (callback_url_of(ctx->subs, rq, &url, r) < 0)
        return;
    char token[TOKEN_LEN + 1];
    struct ev_err err;
    int rc = subs_create(ctx->subs, url, token, &err);
    free(url);
    if (rc < 0) {
        reply_internal(r, rq, err.msg);
        return;
    }
    if (rc == 1) {
        reply_message(r, 507,
                      "The store of asynchronous results is full (RESULT_STORE_SIZE); try "
                      "again once older results expire");
        r->retry_after = 60;
        return;
    }
    if (runner->start(runner, ctx, rq, token, r) < 0) {
        subs_discard(ctx->subs, token);
        return;
    }
    subs_accepted(ctx->subs);
    r->status = 201;
    r->json = json_pack("{s:s}", "token", token);
}

void route_submissions_get(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    static const char *const names[] = {"queued", "running", "done"};
    if (!ctx->subs) {
        reply_message(r, 503, "Asynchronous submissions are not available on this server");
        return;
    }
    enum sub_state st;
    int fd = -1;
    uint64_t size = 0;
    struct ev_err err;
    int rc = subs_lookup(ctx->subs, rq->rest, &st, &fd, &size, &err);
    if (rc < 0) {
        reply_internal(r, rq, err.msg);
    } else if (rc == 1) {
        reply_message(r, 404, "Could not find a submission with this token (unknown, or expired)");
    } else if (st != SUB_DONE) {
        r->status = 200;
        r->json = json_pack("{s:s}", "status", names[st]);
    } else {
        /* the document as stored, sent from its file */
        r->status = 200;
        r->has_file = true;
        r->file_fd = fd;
        r->file_size = size;
        r->content_type = "application/json";
    }
}
