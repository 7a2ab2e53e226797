/* POST /files, GET /files/{id}, DELETE /files/{id}: the file store (SPEC §8). */
#include <stdio.h>

#include "http/reply.h"
#include "http/routes.h"
#include "pipeline/file_store.h"

/* In a thread of its own: hashing a file of hundreds of megabytes takes a second or more. */
void route_files_post(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    struct file_store *fs = ctx->pipeline->files;
    struct file_info info;
    enum file_put_status st;
    struct ev_err err;
    int rc = rq->body_fd >= 0 ? file_store_put_fd(fs, rq->body_fd, &info, &st, &err)
                              : file_store_put_mem(fs, rq->body, rq->body_len, &info, &st, &err);
    if (rc < 0) {
        reply_internal(r, rq, err.msg);
        return;
    }
    switch (st) {
    case FILE_PUT_OK:
        r->status = 200;
        r->json = json_pack("{s:s,s:I}", "id", info.id, "size", (json_int_t)info.size);
        break;
    case FILE_PUT_TOO_LARGE:
        reply_message(r, 413, "The file is larger than %llu bytes (MAX_FILE_SIZE_UPLOAD)",
                      (unsigned long long)ctx->cfg->max_file_upload);
        break;
    case FILE_PUT_FULL:
        reply_message(r, 507,
                      "The file store is full: %llu more bytes would go over its %llu bytes "
                      "(FILE_STORE_SIZE); delete files to make room",
                      (unsigned long long)info.size,
                      (unsigned long long)ctx->cfg->file_store_bytes);
        break;
    }
}

/* 400 for a malformed id, 404 for an unknown one; true when the id is well formed. */
static bool check_id(const char *id, struct reply *r)
{
    if (!file_id_valid(id)) {
        reply_message(r, 400, "Invalid file id: '%.80s' (expected 64 lowercase hexadecimal digits)",
                      id);
        return false;
    }
    return true;
}

static void not_found(const char *id, struct reply *r)
{
    reply_message(r, 404, "File with id: %s does not exist", id);
}

/* Inline: an open; libmicrohttpd then sends the file from its descriptor. */
void route_files_get(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    if (!check_id(rq->rest, r))
        return;
    int fd;
    uint64_t size;
    bool found;
    struct ev_err err;
    if (file_store_open(ctx->pipeline->files, rq->rest, &fd, &size, &found, &err) < 0) {
        reply_internal(r, rq, err.msg);
        return;
    }
    if (!found) {
        not_found(rq->rest, r);
        return;
    }
    r->status = 200;
    r->has_file = true;
    r->file_fd = fd;
    r->file_size = size;
}

void route_files_delete(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    if (!check_id(rq->rest, r))
        return;
    bool found;
    struct ev_err err;
    if (file_store_delete(ctx->pipeline->files, rq->rest, &found, &err) < 0) {
        reply_internal(r, rq, err.msg);
        return;
    }
    if (!found) {
        not_found(rq->rest, r);
        return;
    }
    r->status = 200;
    r->json = json_pack("{s:s}", "message", "The file was deleted");
    fprintf(stderr, "req %llu: file %s deleted\n", (unsigned long long)rq->id, rq->rest);
}
