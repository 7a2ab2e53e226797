/* The API node's side of the cluster (REDIS_URL set on `envicutor serve`): an /execute request,
 * checked as on one node, becomes a job on the stream envicutor:jobs, and its answer comes back
 * on this node's result stream, which one thread reads for every waiting request. A waiting
 * request costs no connection to Redis: the node holds RESULT_CONNECTIONS (1) plus
 * CMD_CONNECTIONS whatever the number of requests (docs/cluster.md).
 *
 * Never runs code: the workers (cluster/worker.h) do. */
#ifndef ENVICUTOR_CLUSTER_API_H
#define ENVICUTOR_CLUSTER_API_H

#include <jansson.h>
#include <stdio.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "pipeline/config.h"

struct cluster_api;

/* A job's answer: an HTTP status and its JSON body (malloc'ed; the callee owns it). Called
 * from the node's result thread, exactly once per job submitted and not withdrawn. */
typedef void cluster_done_fn(void *ctx, int status, char *json, size_t len);

struct cluster_api *cluster_api_start(const struct ev_config *cfg, struct ev_err *err);
/* Every job still waiting is answered 503 first. */
void cluster_api_stop(struct cluster_api *a);

/* Puts a job on the stream: the body from memory (body, len), or from the file body_fd (len
 * bytes, mapped rather than read, so it is copied once, into the command to Redis). 0: done
 * will be called with the answer, or the job was withdrawn meanwhile (cluster_withdraw gave
 * its ctx back). -1: nothing was queued; the answer is a 503 whose message is in err (Redis
 * unreachable, or the queue full). tag: the caller's name for the job, for cluster_withdraw;
 * rid: the request id that the logs of both nodes carry. */
int cluster_submit(struct cluster_api *a, uint64_t tag, const char *rid, const char *flags,
                   const char *body, size_t len, int body_fd, cluster_done_fn *done, void *ctx,
                   struct ev_err *err);

/* The client of job tag went away: the ctx given to cluster_submit when the job was still
 * waiting (done will not be called), else NULL. The job is cancelled wherever it is: taken off
 * the stream if no worker has it yet, else its cancel flag tells the worker to stop it. */
void *cluster_withdraw(struct cluster_api *a, uint64_t tag);

/* The two in one call, for a caller with a thread to wait in (the seam asynchronous
 * submissions use): enqueues and waits for the answer. cancelled (may be NULL) is polled every
 * 100 ms; when it says so the job is withdrawn and -1 returned with err saying so. 0 with
 * *status and *json (malloc'ed), or -1 with a 503's message in err. */
int cluster_execute(struct cluster_api *a, const char *rid, const char *flags, const char *body,
                    size_t len, bool (*cancelled)(void *ctx), void *ctx, int *status, char **json,
                    size_t *json_len, struct ev_err *err);

/* The node's connection to the registry of runtimes (cluster/registry.h). */
struct registry *cluster_registry(struct cluster_api *a);

/* /health of an API node: {"status", "workers": [{"name", "slots", "free"}], "free_slots"},
 * or NULL with err when Redis cannot be read. */
json_t *cluster_health(struct cluster_api *a, struct ev_err *err);
/* The cluster's gauges for GET /metrics (Redis up, live workers, their slots, the jobs in the
 * stream); only envicutor_cluster_redis_up = 0 when Redis cannot be reached. */
void cluster_metrics(struct cluster_api *a, FILE *f);

#endif
