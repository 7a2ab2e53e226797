/* Asynchronous submissions (SPEC §10, docs/async.md): POST /submissions answers a token at
 * once, GET /submissions/{token} says queued, running or done with the /execute answer, and a
 * callback_url is POSTed the result when it is done.
 *
 * Two parts meet at a narrow seam:
 *   - what RUNS a submission (struct sub_runner): given a checked-for-nothing /execute request
 *     and a token, it checks the request as /execute does and starts it, then reports through
 *     subs_running and subs_finished. On one node, submissions_local.c runs it through the
 *     pipeline and its scheduler; on an API node of a cluster, submissions_cluster.c puts it on
 *     the cluster's stream and reports what its workers answer.
 *   - what KEEPS submissions (struct submissions, here): their state in SQLite under the data
 *     directory, each result in a file of its own (never held in memory once written), the
 *     RESULT_TTL expiry, the RESULT_STORE_SIZE bound, and the callbacks' delivery on threads of
 *     their own, after the submission's slot was given back. */
#ifndef ENVICUTOR_SUBMISSIONS_H
#define ENVICUTOR_SUBMISSIONS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "common/token.h"
#include "common/url.h"
#include "http/reply.h"
#include "pipeline/config.h"

struct route_ctx;

/* ---- the seam ------------------------------------------------------------------------- */

struct sub_runner {
    /* Checks rq as POST /execute would (same parser, same messages, ?is_project=true) and starts
     * it under token: 0, or -1 with the answer in r (400, 503 when the queue is full, 500).
     * After 0, the runner calls subs_running when the submission starts (optional) and
     * subs_finished exactly once with the answer POST /execute would have given. rq and its
     * body are the caller's: what the runner keeps past the call it copies. */
    int (*start)(struct sub_runner *self, const struct route_ctx *ctx, struct request *rq,
                 const char *token, struct reply *r);
};

/* ---- the store -------------------------------------------------------------------------- */

struct submissions;

enum sub_state { SUB_QUEUED, SUB_RUNNING, SUB_DONE };

/* Opens (creates) DATA_DIR/submissions.db and DATA_DIR/results. A submission that was queued
 * or running when the server last stopped is done from now on, with a 503 answer saying that
 * the server restarted before it finished; a callback not yet delivered is delivered again
 * once subs_start runs. */
struct submissions *subs_open(const struct ev_config *cfg, struct ev_err *err);
/* Starts the expiry sweep and the callbacks' workers. */
int subs_start(struct submissions *s, struct ev_err *err);
/* Stops them: an attempt under way is cut short, and a callback not yet delivered stays in the
 * database for the next start. Submissions still running must have finished first. */
void subs_stop(struct submissions *s);
void subs_close(struct submissions *s);
struct sub_runner *subs_runner(struct submissions *s);
void subs_set_runner(struct submissions *s, struct sub_runner *r);

/* A new queued submission, its token in token (TOKEN_LEN + 1): 0; 1 when the results kept
 * already fill RESULT_STORE_SIZE (a 507 for the client); -1 with err. callback_url: NULL, or
 * a URL url_parse_http accepted. */
int subs_create(struct submissions *s, const char *callback_url, char *token, struct ev_err *err);
/* The runner started it: counted as accepted. */
void subs_accepted(struct submissions *s);
/* A submission created but never started (the runner refused it): forgotten. */
void subs_discard(struct submissions *s, const char *token);
/* Reported by the runner. answer: the /execute answer's body (status 200), or its error body
 * ({"message"}) with the status it would have had. */
void subs_running(struct submissions *s, const char *token);
void subs_finished(struct submissions *s, const char *token, int status, json_t *answer);

/* A submission's state: 0 with *st (and, when done, *fd open on the result document and its
 * *size); 1 for an unknown or expired token; -1 with err. */
int subs_lookup(struct submissions *s, const char *token, enum sub_state *st, int *fd,
                uint64_t *size, struct ev_err *err);

/* Whether url may be a callback: 0, or -1 with the message of a 400 in err. A host given as
 * an address is checked against CALLBACK_ALLOW_PRIVATE now; a name when it is resolved. */
int subs_check_callback(const struct submissions *s, const char *url, struct ev_err *err);

/* The counters and gauges of GET /metrics. */
void subs_metrics(FILE *f, struct submissions *s);

#endif
