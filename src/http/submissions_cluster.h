/* Asynchronous submissions on an API node of a cluster (REDIS_URL set): run by the cluster's
 * workers (submissions_cluster.c, docs/async.md "In a cluster"). */
#ifndef ENVICUTOR_SUBMISSIONS_CLUSTER_H
#define ENVICUTOR_SUBMISSIONS_CLUSTER_H

#include <stdint.h>

#include "cluster/api.h"
#include "http/submissions.h"

struct cluster_runner;

/* Becomes subs' runner: a submission is a job on the cluster's stream, through a, whose answer
 * the store records. a must outlive the runner. */
struct cluster_runner *cluster_runner_start(struct submissions *subs, struct cluster_api *a,
                                            struct ev_err *err);
/* Waits until no submission of this node is out in the cluster, or the monotonic clock reaches
 * deadline_ns; returns whether none is. */
bool cluster_runner_drain(struct cluster_runner *cr, uint64_t deadline_ns);
/* What is still out is withdrawn (taken off the stream, or its worker told to stop it) and
 * recorded done with the 503 of a stopping server. Before the cluster's API side stops. */
void cluster_runner_stop(struct cluster_runner *cr);

#endif
