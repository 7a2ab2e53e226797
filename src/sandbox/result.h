/* What one run of the sandbox produces: the verdict, the metrics and the output. Apart from
 * sandbox.h so that the layers that only present a result (format/, http/) read this struct
 * without the host, cgroup and network namespace declarations that running one needs. */
#ifndef ENVICUTOR_SBX_RESULT_H
#define ENVICUTOR_SBX_RESULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sbx_status {
    SBX_OK = 0, /* exited with 0 within limits */
    SBX_RE,     /* nonzero exit */
    SBX_SG,     /* killed by a signal */
    SBX_TO,     /* CPU or wall time limit */
    SBX_XX,     /* the sandbox failed */
};

struct sbx_output {
    char *data; /* NUL-terminated, may contain NULs */
    size_t len;
    bool truncated;
};

struct sbx_result {
    enum sbx_status status;
    int exit_code;   /* -1 when the program did not exit normally */
    int exit_signal; /* -1 when not killed by a signal */
    uint64_t cpu_time_us;
    uint64_t wall_time_us;
    uint64_t memory_kb; /* peak */
    bool memory_limit_exceeded;
    bool cpu_limit_exceeded;
    bool wall_limit_exceeded;
    char message[256];
    struct sbx_output out, err;
};

void sbx_result_free(struct sbx_result *res);

const char *sbx_status_name(enum sbx_status s); /* NULL for SBX_OK, "RE", "SG", ... */

#endif
