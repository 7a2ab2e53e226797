#include "cli/options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"

int parse_seconds(const char *name, const char *text, bool allow_zero, double max_s, uint64_t *us,
                  struct ev_err *err)
{
    /* Plain decimal notation only: strtod would also take hex, "nan", "infinity", spaces. */
    if (!text || (!isdigit((unsigned char)*text) && *text != '.') ||
        text[strspn(text, "0123456789.eE+-")] != '\0')
        return ev_fail(err, 0, "%s: expected a number of seconds, got '%s'", name,
                       text ? text : "");
    errno = 0;
    char *end;
    double v = strtod(text, &end);
    if (*end || errno == ERANGE || !isfinite(v) || v < 0 || (v == 0 && !allow_zero) || v > max_s)
        return ev_fail(err, 0, "%s: expected a number of seconds %s 0 and at most %g, got '%s'",
                       name, allow_zero ? "from" : "above", max_s, text);
    double u = v * 1e6;
    *us = v == 0 ? 0 : u < 1 ? 1 : (uint64_t)llround(u);
    return 0;
}

int parse_count(const char *name, const char *text, uint64_t min, uint64_t max, uint64_t *out,
                struct ev_err *err)
{
    uint64_t v;
    if (parse_u64(text, &v) < 0 || v < min || v > max)
        return ev_fail(err, 0, "%s: expected a whole number from %llu to %llu, got '%s'", name,
                       (unsigned long long)min, (unsigned long long)max, text ? text : "");
    *out = v;
    return 0;
}
