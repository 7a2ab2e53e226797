#include "pipeline/pipeline_metrics.h"

struct pipeline_metrics pipeline_metrics;

void metrics_stage(enum stage s, uint64_t us, enum sbx_status status)
{
    if ((unsigned)s >= STAGE_COUNT)
        return;
    hist_observe(&pipeline_metrics.stage[s], us);
    if ((unsigned)status < METRICS_SBX_STATUSES)
        counter_add(&pipeline_metrics.stage_status[s][status], 1);
}

void metrics_box_open(uint64_t us, bool ok)
{
    if (ok)
        hist_observe(&pipeline_metrics.box_setup, us);
    else
        counter_add(&pipeline_metrics.box_open_failed, 1);
}

void metrics_verdict(enum verdict v)
{
    if ((unsigned)v < METRICS_VERDICTS)
        counter_add(&pipeline_metrics.verdicts[v], 1);
}

void metrics_compile_cache(bool hit)
{
    counter_add(hit ? &pipeline_metrics.compile_cache_hits : &pipeline_metrics.compile_cache_misses,
                1);
}

void metrics_helper_restart(void)
{
    counter_add(&pipeline_metrics.helper_restarts, 1);
}

void pipeline_load(struct pipeline *p, struct pipeline_load *l)
{
    pthread_mutex_lock(&p->sched.mu);
    *l = (struct pipeline_load){.waiting = p->sched.waiting,
                                .running = p->sched.running,
                                .exclusive = p->sched.exclusive,
                                .waiting_mem = p->sched.mem,
                                .waiting_spilled = p->sched.spilled};
    pthread_mutex_unlock(&p->sched.mu);
}
