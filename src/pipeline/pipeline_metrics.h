/* The pipeline's counters for GET /metrics (the format in common/metrics.h): kept here, where
 * the stages run, and read by the HTTP layer's /metrics route. Every function is a relaxed
 * atomic add; none takes a lock. */
#ifndef ENVICUTOR_PIPELINE_METRICS_H
#define ENVICUTOR_PIPELINE_METRICS_H

#include <stdbool.h>

#include "common/metrics.h"
#include "pipeline/pipeline.h"
#include "sandbox/result.h"

#define METRICS_SBX_STATUSES (SBX_XX + 1)
#define METRICS_VERDICTS (VERDICT_SKIPPED + 1)

struct pipeline_metrics {
    /* One stage as the server waits for it (the helper's set-up, the program, the teardown);
     * judge mode's tests, checkers and interactors count as runs. */
    struct hist stage[STAGE_COUNT];
    metrics_counter stage_status[STAGE_COUNT][METRICS_SBX_STATUSES];
    /* A submission's box (directory, disk quota, uid) as the server waits for the helper. */
    struct hist box_setup;
    metrics_counter box_open_failed;
    metrics_counter verdicts[METRICS_VERDICTS]; /* one per judged test */
    metrics_counter compile_cache_hits, compile_cache_misses;
    metrics_counter helper_restarts;
};

extern struct pipeline_metrics pipeline_metrics;

void metrics_stage(enum stage s, uint64_t us, enum sbx_status status);
void metrics_box_open(uint64_t us, bool ok);
void metrics_verdict(enum verdict v);
/* For the compile cache (SPEC §8) and a helper that is restarted after dying: defined here so
 * that /metrics shows them from the start; they stay 0 until those exist. */
void metrics_compile_cache(bool hit);
void metrics_helper_restart(void);

/* What the scheduler holds at one moment, read under its lock (not a hot path: a scrape). */
struct pipeline_load {
    unsigned waiting, running;
    bool exclusive;
    uint64_t waiting_mem, waiting_spilled;
};
void pipeline_load(struct pipeline *p, struct pipeline_load *l);

#endif
