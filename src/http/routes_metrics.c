/* GET /metrics: the Prometheus text exposition format (common/metrics.h), written by us. It
 * reads the counters each layer keeps (pipeline/pipeline_metrics.h, the scheduler's queue) and
 * the one the HTTP layer keeps here: answered requests by route and status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/api.h"
#include "common/metrics.h"
#include "http/routes.h"
#include "http/submissions.h"
#include "http/ws.h"
#include "pipeline/pipeline_metrics.h"

/* Per route of the table (plus one for requests without a route: 404, 405) and per status
 * code, so that counting is one atomic add at a fixed place. Unused slots cost 8 bytes each. */
#define MAX_ROUTES 32
#define STATUS_SLOTS 600
static metrics_counter requests[MAX_ROUTES + 1][STATUS_SLOTS];

void metrics_request(const char *method, const char *path, int status)
{
    bool known;
    const struct route *rt = route_find(strcmp(method, "HEAD") == 0 ? "GET" : method, path, &known);
    size_t i = rt ? route_index(rt) : MAX_ROUTES;
    if (i > MAX_ROUTES)
        i = MAX_ROUTES;
    if (status < 0 || status >= STATUS_SLOTS)
        status = 0;
    counter_add(&requests[i][status], 1);
}

static void write_requests(FILE *f)
{
    metrics_family(f, "envicutor_http_requests_total", "counter",
                   "Requests answered, by route (method and path pattern of the route table) and "
                   "status; status=\"aborted\": the client went away first");
    size_t n = route_count() < MAX_ROUTES ? route_count() : MAX_ROUTES;
    for (size_t i = 0; i <= n; i++) {
        const struct route *rt = i < n ? route_at(i) : NULL;
        size_t slot = i < n ? i : MAX_ROUTES;
        for (int st = 0; st < STATUS_SLOTS; st++) {
            uint64_t v = counter_get(&requests[slot][st]);
            if (!v)
                continue;
            char labels[160], code[16];
            if (st)
                snprintf(code, sizeof(code), "%d", st);
            else
                snprintf(code, sizeof(code), "aborted");
            snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s%s\",status=\"%s\"",
                     rt ? rt->method : "", rt ? rt->path : "none",
                     rt && rt->match == ROUTE_PREFIX ? "{id}" : "", code);
            metrics_sample(f, "envicutor_http_requests_total", labels, v);
        }
    }
}

static const char *const stage_names[STAGE_COUNT] = {"extract", "compile", "run"};
static const char *const status_names[METRICS_SBX_STATUSES] = {"OK", "RE", "SG", "TO", "XX"};

static void write_pipeline(FILE *f, struct pipeline *p)
{
    struct pipeline_load l;
    pipeline_load(p, &l);
    const struct pipeline_metrics *m = &pipeline_metrics;
    metrics_family(f, "envicutor_queue_waiting", "gauge", "Requests waiting for their turn");
    metrics_sample(f, "envicutor_queue_waiting", "", l.waiting);
    metrics_family(f, "envicutor_queue_waiting_bytes", "gauge",
                   "Body bytes the waiting requests hold, in memory and spilled to files");
    metrics_sample(f, "envicutor_queue_waiting_bytes", "where=\"memory\"", l.waiting_mem);
    metrics_sample(f, "envicutor_queue_waiting_bytes", "where=\"file\"", l.waiting_spilled);
    metrics_family(f, "envicutor_submissions_running", "gauge", "Submissions running now");
    metrics_sample(f, "envicutor_submissions_running", "", l.running);
    metrics_family(f, "envicutor_exclusive_running", "gauge",
                   "1 while an installation, update or deletion runs alone");
    metrics_sample(f, "envicutor_exclusive_running", "", l.exclusive);

    char labels[64];
    metrics_family(f, "envicutor_stage_duration_seconds", "histogram",
                   "One stage as the server waits for it: the sandbox's set-up, the program, "
                   "the teardown (judge mode's tests count as run)");
    for (int s = 0; s < STAGE_COUNT; s++) {
        snprintf(labels, sizeof(labels), "stage=\"%s\"", stage_names[s]);
        metrics_hist(f, "envicutor_stage_duration_seconds", labels, &m->stage[s]);
    }
    metrics_family(f, "envicutor_stage_results_total", "counter",
                   "Stages run, by the sandbox's status (XX: the sandbox failed)");
    for (int s = 0; s < STAGE_COUNT; s++)
        for (int st = 0; st < METRICS_SBX_STATUSES; st++) {
            snprintf(labels, sizeof(labels), "stage=\"%s\",status=\"%s\"", stage_names[s],
                     status_names[st]);
            metrics_sample(f, "envicutor_stage_results_total", labels,
                           counter_get(&m->stage_status[s][st]));
        }
    metrics_family(f, "envicutor_box_setup_seconds", "histogram",
                   "Setting up a submission's box (directory, disk quota, uid) in the helper");
    metrics_hist(f, "envicutor_box_setup_seconds", "", &m->box_setup);
    metrics_family(f, "envicutor_box_failures_total", "counter", "Boxes the helper could not open");
    metrics_sample(f, "envicutor_box_failures_total", "", counter_get(&m->box_open_failed));
    metrics_family(f, "envicutor_verdicts_total", "counter", "Judged tests, by verdict");
    for (int v = 0; v < METRICS_VERDICTS; v++) {
        snprintf(labels, sizeof(labels), "verdict=\"%s\"", verdict_name((enum verdict)v));
        metrics_sample(f, "envicutor_verdicts_total", labels, counter_get(&m->verdicts[v]));
    }
    metrics_family(f, "envicutor_compile_cache_total", "counter", "Compile cache look-ups");
    metrics_sample(f, "envicutor_compile_cache_total", "result=\"hit\"",
                   counter_get(&m->compile_cache_hits));
    metrics_sample(f, "envicutor_compile_cache_total", "result=\"miss\"",
                   counter_get(&m->compile_cache_misses));
    metrics_family(f, "envicutor_helper_restarts_total", "counter",
                   "Times the privileged helper was restarted after dying");
    metrics_sample(f, "envicutor_helper_restarts_total", "", counter_get(&m->helper_restarts));
}

void route_metrics(const struct route_ctx *ctx, struct request *rq, struct reply *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        reply_internal(r, rq, "open_memstream for /metrics");
        return;
    }
    write_requests(f);
    write_pipeline(f, ctx->pipeline);
    subs_metrics(f, ctx->subs);
    metrics_family(f, "envicutor_websockets_open", "gauge",
                   "WebSocket sessions (/execute/ws) open now: waiting, running or closing");
    metrics_sample(f, "envicutor_websockets_open", "", ws_open_sessions());
    if (ctx->cluster)
        cluster_metrics(ctx->cluster, f);
    if (fclose(f) != 0) {
        free(text);
        reply_internal(r, rq, "write /metrics");
        return;
    }
    r->status = 200;
    r->owned_text = text;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
