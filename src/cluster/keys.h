/* The names the API nodes and the workers share in Redis (docs/cluster.md):
 *
 *   envicutor:jobs              the stream of jobs; consumer group "workers". An entry's fields:
 *                               job (its id), rid (the request id, for the logs), reply (the
 *                               result stream of the API node that waits), flags (the query's:
 *                               "is_project,base64_output"), body (the /execute body as sent).
 *                               A job's entry is deleted when its result is written, so the
 *                               stream's length counts the jobs waiting or running.
 *   envicutor:results:<node>    one stream per API node: the results of its jobs (fields job,
 *                               status, body), read by one thread of that node.
 *   envicutor:cancel:<job>      set when a job's client went away; workers look before and while
 *                               they run it.
 *   envicutor:worker:<name>     a worker's heartbeat ("<slots> <free>"), expiring after
 *                               JOB_RECLAIM_SECONDS. */
#ifndef ENVICUTOR_CLUSTER_KEYS_H
#define ENVICUTOR_CLUSTER_KEYS_H

#define KEY_JOBS "envicutor:jobs"
#define JOBS_GROUP "workers"
#define KEY_RESULTS_PREFIX "envicutor:results:"
#define KEY_CANCEL_PREFIX "envicutor:cancel:"
#define KEY_WORKER_PREFIX "envicutor:worker:"

/* How long a cancel flag and an API node's result stream outlive their last use, seconds. */
#define CANCEL_TTL 3600
#define RESULTS_TTL 86400

#endif
