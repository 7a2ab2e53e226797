/* Unit tests of the metrics primitives: which bucket a duration lands in, and the exposition
 * text of a histogram (cumulative buckets, +Inf, sum in seconds, count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"

static void buckets_are_upper_bounds_inclusive(void **state)
{
    (void)state;
    static struct hist h;
    hist_observe(&h, 1000);      /* exactly 1 ms: the first bucket (le="0.001") */
    hist_observe(&h, 1001);      /* just above: the second */
    hist_observe(&h, 0);         /* the first */
    hist_observe(&h, 200000000); /* above the last bound: +Inf */
    assert_int_equal(counter_get(&h.bucket[0]), 2);
    assert_int_equal(counter_get(&h.bucket[1]), 1);
    assert_int_equal(counter_get(&h.bucket[HIST_BUCKETS]), 1);
    assert_int_equal(counter_get(&h.sum_us), 1000 + 1001 + 200000000);
}

static char *render(const char *labels, const struct hist *h)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    metrics_hist(f, "x_seconds", labels, h);
    assert_int_equal(fclose(f), 0);
    return text;
}

static void histogram_text_is_cumulative(void **state)
{
    (void)state;
    static struct hist h;
    hist_observe(&h, 3000);    /* le 0.005 */
    hist_observe(&h, 3000);    /* le 0.005 */
    hist_observe(&h, 2000000); /* le 2.5 */
    char *t = render("stage=\"run\"", &h);
    assert_non_null(strstr(t, "x_seconds_bucket{stage=\"run\",le=\"0.001\"} 0\n"));
    assert_non_null(strstr(t, "x_seconds_bucket{stage=\"run\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(t, "x_seconds_bucket{stage=\"run\",le=\"1\"} 2\n"));
    assert_non_null(strstr(t, "x_seconds_bucket{stage=\"run\",le=\"2.5\"} 3\n"));
    assert_non_null(strstr(t, "x_seconds_bucket{stage=\"run\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t, "x_seconds_sum{stage=\"run\"} 2.006000\n"));
    assert_non_null(strstr(t, "x_seconds_count{stage=\"run\"} 3\n"));
    free(t);
    t = render("", &h);
    assert_non_null(strstr(t, "x_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t, "x_seconds_count 3\n"));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buckets_are_upper_bounds_inclusive),
        cmocka_unit_test(histogram_text_is_cumulative),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
