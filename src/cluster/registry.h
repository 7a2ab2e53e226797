/* The cluster's registry of runtimes (SPEC §10 "Runtimes", docs/cluster.md): the definitions
 * live in Redis, and every worker makes its own runtimes those of the registry.
 *
 * The registry is the command: adding or deleting a runtime changes it and bumps a version
 * counter; each worker looks at the counter four times a second and, when it moved, brings
 * its own runtimes in line (installing what it lacks, removing what the registry no longer
 * has, through the pipeline's exclusive turn), publishes the runtime-info hash of each, and
 * pushes one answer per change to that change's list, where the API node that made the change
 * waits for them. A worker that missed a change (it was down, Redis was away) converges
 * through the same code when it looks again; nothing is lost with a message.
 *
 * The registry's hash of a runtime is that of its first successful installation; a worker
 * runs a job only when its own hash of each runtime the job names is that one. */
#ifndef ENVICUTOR_CLUSTER_REGISTRY_H
#define ENVICUTOR_CLUSTER_REGISTRY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/redis_url.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"

struct registry;

/* worker: the worker's name (its heartbeat's), or NULL on an API node. */
struct registry *registry_open(const struct ev_config *cfg, const char *worker, struct ev_err *err);
void registry_close(struct registry *g);

/* ---- An API node's side ------------------------------------------------------------------ */

enum registry_conflict { REGISTRY_OK, REGISTRY_NAME_TAKEN, REGISTRY_ID_TAKEN };

/* Stores the definition (the POST /runtimes body, already checked) under want_id, or under a
 * new id from the registry's counter when want_id is 0, in one Lua script: the id, the name's
 * uniqueness and the version are decided by Redis, so that every node agrees. *version: the
 * change's number, for registry_wait. */
int registry_add(struct registry *g, const char *name, const char *def, size_t def_len,
                 int64_t want_id, int64_t *id, long long *version, enum registry_conflict *c,
                 struct ev_err *err);
/* Removes a runtime: *found false when there was none (nothing changed). */
int registry_delete(struct registry *g, int64_t id, bool *found, long long *version,
                    struct ev_err *err);
/* [{"id", "name"}] ordered by id. */
json_t *registry_list(struct registry *g, struct ev_err *err);
/* The definition (malloc'ed) and the registry's hash ("" while no worker has installed it);
 * *def NULL when there is no such runtime. */
int registry_get(struct registry *g, int64_t id, char **def, size_t *def_len, char hash[72],
                 struct ev_err *err);
/* The live workers' names (heartbeats), as a JSON array of strings. */
json_t *registry_live_workers(struct registry *g, struct ev_err *err);
/* Waits for the answer of each worker of workers to change version: until all answered, or
 * the heartbeat of those that did not is gone (reported "no answer": the worker stopped or
 * is stuck), or timeout_s passed (the others reported "no answer" too). [{"worker",
 * "status": "installed" | "deleted" | "failed" | "no answer", "hash"?, "message"?,
 * "stdout"?, "stderr"?}] */
json_t *registry_wait(struct registry *g, long long version, json_t *workers, unsigned timeout_s,
                      struct ev_err *err);
/* [{"worker", "hash"}]: each live worker's runtime-info hash of runtime id (null: it does not
 * have it). */
json_t *registry_worker_hashes(struct registry *g, int64_t id, struct ev_err *err);

/* ---- A worker's side --------------------------------------------------------------------- */

/* Brings the worker's runtimes in line with the registry once (returns when done, or -1 when
 * Redis could not be read), then keeps them so in a thread of its own until *stop. */
int registry_sync_start(struct registry *g, struct pipeline *p, atomic_bool *stop,
                        struct ev_err *err);
void registry_sync_stop(struct registry *g);
/* The version the worker is in line with (for its heartbeat). */
long long registry_applied(struct registry *g);

enum registry_check {
    REGISTRY_FAILED = -1,
    REGISTRY_RUNS_HERE,
    REGISTRY_UNKNOWN,
    REGISTRY_ELSEWHERE
};
/* Whether a job naming runtime id may run here: the registry has it and this worker's hash
 * of it is the registry's (waiting for a sync in progress first). REGISTRY_UNKNOWN: the
 * registry has no such runtime (the answer of a lone server's unknown id). */
enum registry_check registry_check(struct registry *g, struct pipeline *p, int64_t id,
                                   struct ev_err *err);
/* Whether another live worker has runtime id with the registry's hash. */
bool registry_elsewhere(struct registry *g, int64_t id);

#endif
