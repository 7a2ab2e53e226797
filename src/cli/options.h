/* Parsing of limit values given on the command line or in the environment. */
#ifndef ENVICUTOR_OPTIONS_H
#define ENVICUTOR_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

/* A decimal number of seconds ("2", "0.5", "1e-3"), finite, > 0 (or >= 0 with allow_zero) and
 * <= max_s, converted to microseconds (at least 1 unless zero). */
int parse_seconds(const char *name, const char *text, bool allow_zero, double max_s, uint64_t *us,
                  struct ev_err *err);
/* A whole number >= min and <= max. */
int parse_count(const char *name, const char *text, uint64_t min, uint64_t max, uint64_t *out,
                struct ev_err *err);

#endif
