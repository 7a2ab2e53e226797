/* One error convention for the whole project.
 *
 * A function that can fail takes `struct ev_err *err` as its last argument and returns a
 * negative value on failure after filling it with ev_fail(). The message names the thing that
 * failed (a path, a value) and the reason, so the caller can pass it up unchanged.
 *
 * The rule, everywhere:
 *   - err is never NULL; a caller that does not care about the reason passes a local it
 *     then ignores.
 *   - the caller need not clear err first: a function writes it only when it fails, and on
 *     success err may hold anything (a stale message, garbage).
 *   - success or failure is told by the return value only, never by err's contents
 *     (err->msg[0] means nothing). */
#ifndef ENVICUTOR_ERROR_H
#define ENVICUTOR_ERROR_H

#include <stddef.h>

struct ev_err {
    int errnum; /* errno value, or 0 when the failure is not a system call's */
    char msg[512];
};

/* Fills err with the formatted message, followed by ": strerror(errnum)" when
 * errnum is non-zero. Always returns -1, so callers can write `return ev_fail(...)`. */
int ev_fail(struct ev_err *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with more context ("box 3: " + message). Returns -1. */
int ev_wrap(struct ev_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Where a layer reports a failure that must not stop its caller (a box passed over, a
 * background thread giving up): msg is one line, without a newline. The layer never prints;
 * the program that uses it chooses where such lines go. */
typedef void ev_log_fn(void *ctx, const char *msg);

/* The usual choice of a program: "envicutor: msg" on stderr. ctx is unused. */
void ev_log_stderr(void *ctx, const char *msg);

#endif
