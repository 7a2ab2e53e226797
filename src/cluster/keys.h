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
 *   envicutor:worker:<name>     a worker's heartbeat ("<slots> <free> <registry version it is
 *                               in line with>"), expiring after JOB_RECLAIM_SECONDS.
 *   envicutor:skips             hash: a job entry's id -> how many times a worker passed it
 *                               on (its runtime there is not the registry's); not attempts.
 *
 * The registry of runtimes (cluster/registry.h):
 *   envicutor:runtimes          sorted set of the ids (score: the id).
 *   envicutor:runtimes:names    hash: name -> id (names are unique, as on one node).
 *   envicutor:runtimes:next     the counter that gives ids.
 *   envicutor:runtimes:version  bumped by every change; workers watch it.
 *   envicutor:runtimes:epoch    a random name given at the first change: a registry made
 *                               again (Redis lost its data) counts its versions anew.
 *   envicutor:runtime:<id>      hash: name, def (the POST /runtimes body), digest (its
 *                               SHA-256), hash (the first successful installation's
 *                               runtime-info hash: the registry's).
 *   envicutor:runtimes:change:<v>  "add <id>" or "del <id>": what change v was (a day).
 *   envicutor:runtimes:acks:<v>    list: each worker's answer to change v, JSON (an hour).
 *   envicutor:worker-runtimes:<name>  hash: runtime id -> that worker's runtime-info hash,
 *                               expiring with its heartbeat. */
#ifndef ENVICUTOR_CLUSTER_KEYS_H
#define ENVICUTOR_CLUSTER_KEYS_H

#define KEY_JOBS "envicutor:jobs"
#define JOBS_GROUP "workers"
#define KEY_RESULTS_PREFIX "envicutor:results:"
#define KEY_CANCEL_PREFIX "envicutor:cancel:"
#define KEY_WORKER_PREFIX "envicutor:worker:"
#define KEY_SKIPS "envicutor:skips"
#define KEY_RT_IDS "envicutor:runtimes"
#define KEY_RT_NAMES "envicutor:runtimes:names"
#define KEY_RT_NEXT "envicutor:runtimes:next"
#define KEY_RT_VERSION "envicutor:runtimes:version"
#define KEY_RT_EPOCH "envicutor:runtimes:epoch"
#define KEY_RT_PREFIX "envicutor:runtime:"
#define KEY_RT_CHANGE_PREFIX "envicutor:runtimes:change:"
#define KEY_RT_ACKS_PREFIX "envicutor:runtimes:acks:"
#define KEY_WORKER_RT_PREFIX "envicutor:worker-runtimes:"

/* How long a cancel flag and an API node's result stream outlive their last use, seconds. */
#define CANCEL_TTL 3600
#define RESULTS_TTL 86400

#endif
