/* The built-in checkers of judge mode (SPEC §8): the program's output against the expected
 * one, each read as a stream from memory or from a descriptor, so that an expected output of
 * hundreds of megabytes in the file store is never loaded whole and the program's output,
 * already in memory, is not copied. */
#ifndef ENVICUTOR_CHECKER_H
#define ENVICUTOR_CHECKER_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

enum checker_kind {
    CHECKER_LINES = 0, /* the default: trailing blanks of each line, trailing empty lines ignored */
    CHECKER_EXACT,     /* bytes equal */
    CHECKER_TOKENS,    /* whitespace-separated tokens equal */
    CHECKER_FLOAT,     /* tokens; numbers equal within an absolute or relative error */
    CHECKER_CUSTOM,    /* a program of the request's (judge.c) */
};

/* Bytes to compare: data/len, or (fd > 0) a descriptor read from offset 0 with pread (its
 * offset is left alone, so one stored file can serve several tests at once). */
struct check_src {
    const char *data;
    size_t len;
    int fd;
};

enum check_result { CHECK_AC, CHECK_WA, CHECK_ERROR };

/* Compares output with expected. CHECK_WA comes with a one-line message in msg saying where
 * the first difference is; CHECK_ERROR (a read failed, out of memory) with err. */
enum check_result checker_compare(enum checker_kind kind, double eps,
                                  const struct check_src *output, const struct check_src *expected,
                                  char *msg, size_t msg_size, struct ev_err *err);

/* "lines", "exact", "tokens", "float": the kind of a name, or -1. */
int checker_from_name(const char *name);
const char *checker_name(enum checker_kind kind);

#endif
