#include "common/metrics.h"

#include <inttypes.h>

const uint64_t hist_bounds_us[HIST_BUCKETS] = {
    1000,    5000,    10000,   25000,    50000,    100000,   250000,    500000,
    1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 120000000,
};

void hist_observe(struct hist *h, uint64_t us)
{
    size_t i = 0;
    while (i < HIST_BUCKETS && us > hist_bounds_us[i])
        i++;
    counter_add(&h->bucket[i], 1);
    counter_add(&h->sum_us, us);
}

void metrics_family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_sample(FILE *f, const char *name, const char *labels, uint64_t value)
{
    if (labels[0])
        fprintf(f, "%s{%s} %" PRIu64 "\n", name, labels, value);
    else
        fprintf(f, "%s %" PRIu64 "\n", name, value);
}

void metrics_hist(FILE *f, const char *name, const char *labels, const struct hist *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t total = 0;
    for (size_t i = 0; i <= HIST_BUCKETS; i++) {
        total += counter_get(&h->bucket[i]);
        if (i < HIST_BUCKETS)
            fprintf(f, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels, sep,
                    (double)hist_bounds_us[i] / 1e6, total);
        else
            fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, total);
    }
    double sum = (double)counter_get(&h->sum_us) / 1e6;
    if (labels[0]) {
        fprintf(f, "%s_sum{%s} %.6f\n", name, labels, sum);
        fprintf(f, "%s_count{%s} %" PRIu64 "\n", name, labels, total);
    } else {
        fprintf(f, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, sum, name, total);
    }
}
