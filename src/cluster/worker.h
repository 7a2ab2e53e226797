/* `envicutor worker`: the cluster's side that runs code. It takes a job from the stream
 * envicutor:jobs (consumer group "workers") only while one of its MAX_CONCURRENT_SUBMISSIONS
 * slots is free, runs it through the pipeline exactly as `serve` runs an /execute request
 * (http/routes_execute.c, judge mode included), writes the answer to the API node's result
 * stream and acknowledges the job in one transaction.
 *
 * While it runs, a worker beats: its heartbeat key lives JOB_RECLAIM_SECONDS, and each job it
 * holds is claimed again by it (XCLAIM ... JUSTID), which keeps the job's idle time near zero.
 * A worker that stops beating leaves its jobs idle; after JOB_RECLAIM_SECONDS another worker
 * takes them (XAUTOCLAIM) and runs them again, up to JOB_MAX_ATTEMPTS deliveries, after which
 * the job is answered with an XX result. docs/cluster.md says what that guarantees.
 *
 * Before its first job (and its first heartbeat) a worker makes its runtimes the registry's
 * (cluster/registry.h), and it runs a job only with the registry's runtime: a job whose runtime
 * here differs is passed on to a worker that has it. */
#ifndef ENVICUTOR_CLUSTER_WORKER_H
#define ENVICUTOR_CLUSTER_WORKER_H

#include <stdatomic.h>

#include "common/error.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"

/* Runs jobs until *stop is set, then waits for the jobs it runs (the caller stops the pipeline
 * to cut them short: a job cut short is left unacknowledged, for another worker). */
int worker_run(struct pipeline *p, const struct ev_config *cfg, atomic_bool *stop,
               struct ev_err *err);

#endif
