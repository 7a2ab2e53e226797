/* The server's configuration (SPEC §4), read once from environment variables, and the limits
 * of one stage: what a request may ask for, bounded by the configuration. */
#ifndef ENVICUTOR_CONFIG_H
#define ENVICUTOR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct ev_limits {
    uint64_t wall_time_us, cpu_time_us, extra_time_us;
    uint64_t memory_kb, max_open_files, max_file_size_kb, max_processes;
};

struct ev_config {
    unsigned port;
    struct ev_limits compile, run;
    unsigned max_concurrent;       /* MAX_CONCURRENT_SUBMISSIONS */
    unsigned max_tests;            /* MAX_TESTS: tests of one judge-mode request */
    unsigned max_queue;            /* MAX_QUEUE_SIZE: waiting requests before 503 */
    uint64_t max_queue_memory;     /* MAX_QUEUE_MEMORY: body bytes waiting requests hold */
    uint64_t max_queue_spilled;    /* MAX_QUEUE_SPILLED: body bytes they hold in files */
    uint64_t installation_timeout; /* seconds */
    uint64_t update_timeout;       /* seconds */
    uint64_t max_request_bytes;    /* MAX_REQUEST_SIZE: larger bodies get 413 */
    uint64_t max_output_bytes;     /* MAX_OUTPUT_SIZE: per stream and stage */
    uint64_t max_file_upload;      /* MAX_FILE_SIZE_UPLOAD: bytes of one POST /files */
    uint64_t file_store_bytes;     /* FILE_STORE_SIZE: bytes of all stored files */
    uint64_t box_disk_kb;          /* BOX_DISK_SIZE: whole submission directory */
    uint64_t box_max_files;        /* BOX_MAX_FILES */
    uint64_t connection_timeout;   /* CONNECTION_TIMEOUT: seconds a connection may stay silent */
    uint64_t compile_cache_bytes;  /* COMPILE_CACHE_SIZE: 0 disables the compile cache */
    uint64_t shutdown_timeout;     /* SHUTDOWN_TIMEOUT: seconds running work gets on SIGTERM */
    uint64_t result_ttl;           /* RESULT_TTL: seconds an async submission's result is kept */
    uint64_t result_store_bytes;   /* RESULT_STORE_SIZE: bytes of async results kept in all */
    bool callback_allow_private;   /* CALLBACK_ALLOW_PRIVATE: callbacks may reach private hosts */
    char data_dir[200];            /* ENVICUTOR_DATA_DIR */
    char user[64];                 /* ENVICUTOR_USER: the unprivileged identity */
    /* The cluster (docs/cluster.md): REDIS_URL ("" on one node), checked by redis_url_parse. */
    char redis_url[300];
    uint64_t job_reclaim_seconds; /* JOB_RECLAIM_SECONDS: a silent worker's jobs go to another */
    uint64_t job_max_attempts;    /* JOB_MAX_ATTEMPTS: runs of one job before an XX result */
};

typedef const char *(*config_getenv_fn)(const char *name);

/* Fills cfg from the environment (getenv, or another lookup for tests); a malformed value
 * fails with a message naming the variable. */
int config_load(struct ev_config *cfg, config_getenv_fn get, struct ev_err *err);

/* The limits a request asks for: each one present or not, as the number the client sent. */
enum limit_index {
    LIM_WALL_TIME,
    LIM_CPU_TIME,
    LIM_MEMORY,
    LIM_EXTRA_TIME,
    LIM_MAX_OPEN_FILES,
    LIM_MAX_FILE_SIZE,
    LIM_MAX_PROCESSES,
    LIM_COUNT,
};

struct limit_request {
    bool present[LIM_COUNT];
    double value[LIM_COUNT];
};

/* The JSON/API name of each limit ("wall_time", ..., "max_number_of_processes"). */
extern const char *const limit_names[LIM_COUNT];

/* Merges a request with the configured maximum: an omitted limit takes the maximum; a given one
 * must be in range. On failure writes the client-facing message ("Invalid run limits:
 * wall_time can't exceed 60 seconds") to err and returns -1. stage is "run" or "compile". */
int limits_resolve(const struct limit_request *req, const struct ev_limits *max, const char *stage,
                   struct ev_limits *out, struct ev_err *err);

/* One limit: v (NaN for a value of the wrong type) checked against [minimum, max] and
 * converted to microseconds, kilobytes or a count in *out; -1 with the client-facing message
 * naming the limit and its allowed range. */
int limit_check(int i, double v, uint64_t max, const char *stage, uint64_t *out,
                struct ev_err *err);
void limits_to_array(const struct ev_limits *l, uint64_t v[LIM_COUNT]);
/* Microseconds as exact decimal seconds: 60000000 -> "60", 1500 -> "0.0015". */
void format_seconds(uint64_t us, char *buf, size_t size);
void limits_from_array(const uint64_t v[LIM_COUNT], struct ev_limits *l);

/* A runtime's own limits (POST /runtimes compile_limits / run_limits), in the units of
 * struct ev_limits: for that runtime each is both the default and the maximum. */
struct limit_override {
    bool present[LIM_COUNT];
    uint64_t value[LIM_COUNT];
};

/* The limits of a stage of a runtime: the system's, lowered by the runtime's override (a value
 * above the system's, possible when the configuration was lowered after the runtime was added,
 * never raises it). */
void limits_override(const struct ev_limits *system, const struct limit_override *o,
                     struct ev_limits *out);

#endif
