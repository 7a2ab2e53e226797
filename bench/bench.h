/* What the benchmark programs share: a monotonic clock (seconds, milliseconds) and an order
 * for qsort of samples. */
#ifndef ENVICUTOR_BENCH_H
#define ENVICUTOR_BENCH_H

#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double bench_now_ms(void)
{
    return bench_now() * 1e3;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#endif
