/* Counters and histograms for GET /metrics, and the few lines of the Prometheus text exposition
 * format (version 0.0.4) that print them. Written here rather than taken from a client library:
 * Debian packages none for C that fits a server without its own HTTP stack, and what we need is
 * a handful of lines.
 *
 * Each layer keeps its own counters where its events happen (the pipeline's stages, the HTTP
 * layer's requests) as plain atomics: adding to one is a single relaxed atomic add, with no lock
 * on any hot path. A scrape reads them without stopping anything, so a histogram's buckets, sum
 * and count may be a few events apart from one another in one scrape; each value on its own
 * never goes backwards. */
#ifndef ENVICUTOR_METRICS_H
#define ENVICUTOR_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

typedef atomic_uint_fast64_t metrics_counter;

static inline void counter_add(metrics_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t counter_get(const metrics_counter *c)
{
    return atomic_load_explicit((metrics_counter *)c, memory_order_relaxed);
}

/* Upper bounds of the duration buckets, in microseconds: from a millisecond (a run of /bin/true
 * is a few) to two minutes (the longest default stage), plus +Inf. */
#define HIST_BUCKETS 15
extern const uint64_t hist_bounds_us[HIST_BUCKETS];

struct hist {
    metrics_counter bucket[HIST_BUCKETS + 1]; /* not cumulative; the last is +Inf */
    metrics_counter sum_us;
};

void hist_observe(struct hist *h, uint64_t us);

/* "# HELP" and "# TYPE" lines of a metric family. */
void metrics_family(FILE *f, const char *name, const char *type, const char *help);
/* One sample: name{labels} value; labels is "" or 'a="x",b="y"' (values already escaped). */
void metrics_sample(FILE *f, const char *name, const char *labels, uint64_t value);
/* The _bucket (cumulative, le="..."), _sum (seconds) and _count samples of a histogram. */
void metrics_hist(FILE *f, const char *name, const char *labels, const struct hist *h);

#endif
