#include "pipeline/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/redis_url.h"

const char *const limit_names[LIM_COUNT] = {
    "wall_time",
    "cpu_time",
    "memory",
    "extra_time",
    "max_open_files",
    "max_file_size",
    "max_number_of_processes",
};

/* Limits are whole numbers of kilobytes or counts, or seconds with a fractional part. */
static const bool limit_is_seconds[LIM_COUNT] = {true, true, false, true, false, false, false};
static const char *const limit_units[LIM_COUNT] = {
    " seconds", " seconds", " kilobytes", " seconds", "", " kilobytes", ""};

#define MAX_SECONDS 86400.0
#define MAX_KB (1ull << 32)
#define MAX_COUNT (1ull << 20)

static int env_seconds(config_getenv_fn get, const char *name, double dflt, bool allow_zero,
                       uint64_t *us, struct ev_err *err)
{
    const char *s = get(name);
    double v = dflt;
    if (s) {
        char *end;
        errno = 0;
        v = strtod(s, &end);
        if (!*s || isspace((unsigned char)*s) || *end || errno || !isfinite(v) || v < 0 ||
            (v == 0 && !allow_zero) || v > MAX_SECONDS)
            return ev_fail(err, 0, "%s: expected a number of seconds %s 0 and at most %g, got '%s'",
                           name, allow_zero ? "from" : "above", MAX_SECONDS, s);
    }
    *us = (uint64_t)llround(v * 1e6);
    if (v > 0 && *us == 0)
        *us = 1;
    return 0;
}

static int env_count(config_getenv_fn get, const char *name, uint64_t dflt, uint64_t min,
                     uint64_t max, uint64_t *out, struct ev_err *err)
{
    const char *s = get(name);
    if (!s) {
        *out = dflt;
        return 0;
    }
    uint64_t v;
    if (parse_u64(s, &v) < 0 || v < min || v > max)
        return ev_fail(err, 0, "%s: expected a whole number from %llu to %llu, got '%s'", name,
                       (unsigned long long)min, (unsigned long long)max, s);
    *out = v;
    return 0;
}

static int stage_limits(config_getenv_fn get, const char *prefix, const struct ev_limits *dflt,
                        struct ev_limits *l, struct ev_err *err)
{
    char n[64];
#define NAME(suffix) (snprintf(n, sizeof(n), "%s_%s", prefix, suffix), n)
    if (env_seconds(get, NAME("WALL_TIME"), (double)dflt->wall_time_us / 1e6, false,
                    &l->wall_time_us, err) < 0 ||
        env_seconds(get, NAME("CPU_TIME"), (double)dflt->cpu_time_us / 1e6, false, &l->cpu_time_us,
                    err) < 0 ||
        env_seconds(get, NAME("EXTRA_TIME"), (double)dflt->extra_time_us / 1e6, true,
                    &l->extra_time_us, err) < 0 ||
        env_count(get, NAME("MEMORY"), dflt->memory_kb, 1024, MAX_KB, &l->memory_kb, err) < 0 ||
        env_count(get, NAME("MAX_OPEN_FILES"), dflt->max_open_files, 4, MAX_COUNT,
                  &l->max_open_files, err) < 0 ||
        env_count(get, NAME("MAX_FILE_SIZE"), dflt->max_file_size_kb, 1, MAX_KB,
                  &l->max_file_size_kb, err) < 0 ||
        env_count(get, NAME("MAX_NUMBER_OF_PROCESSES"), dflt->max_processes, 1, MAX_COUNT,
                  &l->max_processes, err) < 0)
        return -1;
#undef NAME
    return 0;
}

static int env_string(config_getenv_fn get, const char *name, const char *dflt, char *out,
                      size_t size, bool absolute, struct ev_err *err)
{
    const char *s = get(name);
    if (!s)
        s = dflt;
    if (!*s || strlen(s) >= size || (absolute && s[0] != '/'))
        return ev_fail(err, 0, "%s: expected %s of at most %zu bytes, got '%s'", name,
                       absolute ? "an absolute path" : "a non-empty value", size - 1, s);
    snprintf(out, size, "%s", s);
    return 0;
}

int config_load(struct ev_config *cfg, config_getenv_fn get, struct ev_err *err)
{
    memset(cfg, 0, sizeof(*cfg));
    static const struct ev_limits compile_dflt = {60000000, 30000000, 5000000, 1000000,
                                                  512,      100000,   512};
    static const struct ev_limits run_dflt = {60000000, 30000000, 5000000, 1000000, 64, 100000, 64};
    uint64_t v;
    if (env_count(get, "PORT", 5000, 1, 65535, &v, err) < 0)
        return -1;
    cfg->port = (unsigned)v;
    if (stage_limits(get, "COMPILE", &compile_dflt, &cfg->compile, err) < 0 ||
        stage_limits(get, "RUN", &run_dflt, &cfg->run, err) < 0)
        return -1;
    if (env_count(get, "MAX_CONCURRENT_SUBMISSIONS", 8, 1, 1024, &v, err) < 0)
        return -1;
    cfg->max_concurrent = (unsigned)v;
    if (env_count(get, "MAX_TESTS", 1000, 1, 1000000, &v, err) < 0)
        return -1;
    cfg->max_tests = (unsigned)v;
    /* MAX_QUEUE_SIZE; MAX_QUEUED_REQUESTS is its earlier name, still read when the new one is
     * not set. */
    const char *queue_var = get("MAX_QUEUE_SIZE") ? "MAX_QUEUE_SIZE" : "MAX_QUEUED_REQUESTS";
    /* No count by default: waiting is bounded by what it holds (SPEC §5). */
    if (env_count(get, queue_var, UINT32_MAX, 0, UINT32_MAX, &v, err) < 0)
        return -1;
    cfg->max_queue = (unsigned)v;
    if (env_count(get, "MAX_QUEUE_MEMORY", 256ull << 20, 0, 1ull << 40, &cfg->max_queue_memory,
                  err) < 0 ||
        env_count(get, "MAX_QUEUE_SPILLED", 4ull << 30, 0, 1ull << 44, &cfg->max_queue_spilled,
                  err) < 0)
        return -1;
    if (env_count(get, "INSTALLATION_TIMEOUT", 120, 1, 86400, &cfg->installation_timeout, err) <
            0 ||
        env_count(get, "UPDATE_TIMEOUT", 240, 1, 86400, &cfg->update_timeout, err) < 0 ||
        env_count(get, "MAX_REQUEST_SIZE", 64ull << 20, 1024, 1ull << 32, &cfg->max_request_bytes,
                  err) < 0 ||
        env_count(get, "MAX_OUTPUT_SIZE", 4ull << 20, 0, 1ull << 30, &cfg->max_output_bytes, err) <
            0 ||
        env_count(get, "MAX_FILE_SIZE_UPLOAD", 256ull << 20, 1, 1ull << 40, &cfg->max_file_upload,
                  err) < 0 ||
        env_count(get, "FILE_STORE_SIZE", 4ull << 30, 0, 1ull << 50, &cfg->file_store_bytes, err) <
            0 ||
        env_count(get, "BOX_DISK_SIZE", 262144, 1024, MAX_KB, &cfg->box_disk_kb, err) < 0 ||
        env_count(get, "BOX_MAX_FILES", 16384, 64, 1ull << 31, &cfg->box_max_files, err) < 0 ||
        env_count(get, "CONNECTION_TIMEOUT", 60, 1, 3600, &cfg->connection_timeout, err) < 0 ||
        env_count(get, "COMPILE_CACHE_SIZE", 256ull << 20, 0, 1ull << 44, &cfg->compile_cache_bytes,
                  err) < 0 ||
        env_count(get, "SHUTDOWN_TIMEOUT", 30, 0, 3600, &cfg->shutdown_timeout, err) < 0 ||
        env_count(get, "RESULT_TTL", 3600, 1, 30 * 86400, &cfg->result_ttl, err) < 0 ||
        env_count(get, "RESULT_STORE_SIZE", 1ull << 30, 0, 1ull << 44, &cfg->result_store_bytes,
                  err) < 0 ||
        env_count(get, "CALLBACK_ALLOW_PRIVATE", 0, 0, 1, &v, err) < 0)
        return -1;
    cfg->callback_allow_private = v == 1;
    if (env_string(get, "ENVICUTOR_DATA_DIR", "/var/lib/envicutor", cfg->data_dir,
                   sizeof(cfg->data_dir), true, err) < 0 ||
        env_string(get, "ENVICUTOR_USER", "envicutor", cfg->user, sizeof(cfg->user), false, err) <
            0)
        return -1;
    const char *url = get("REDIS_URL");
    if (url && *url) {
        struct redis_addr addr;
        if (redis_url_parse(url, &addr, err) < 0)
            return -1;
        if (strlen(url) >= sizeof(cfg->redis_url))
            return ev_fail(err, 0, "REDIS_URL: longer than %zu bytes", sizeof(cfg->redis_url) - 1);
        snprintf(cfg->redis_url, sizeof(cfg->redis_url), "%s", url);
    }
    if (env_count(get, "JOB_RECLAIM_SECONDS", 30, 1, 86400, &cfg->job_reclaim_seconds, err) < 0 ||
        env_count(get, "JOB_MAX_ATTEMPTS", 3, 1, 100, &cfg->job_max_attempts, err) < 0)
        return -1;
    return 0;
}

void format_seconds(uint64_t us, char *buf, size_t size)
{
    if (us % 1000000 == 0) {
        snprintf(buf, size, "%llu", (unsigned long long)(us / 1000000));
        return;
    }
    snprintf(buf, size, "%llu.%06llu", (unsigned long long)(us / 1000000),
             (unsigned long long)(us % 1000000));
    char *e = buf + strlen(buf) - 1;
    while (*e == '0')
        *e-- = '\0';
}

static void format_max(int i, uint64_t max, char *buf, size_t size)
{
    if (limit_is_seconds[i]) {
        char s[32];
        format_seconds(max, s, sizeof(s));
        snprintf(buf, size, "%s%s", s, limit_units[i]);
    } else {
        snprintf(buf, size, "%llu%s", (unsigned long long)max, limit_units[i]);
    }
}

/* "wall_time must be a number of seconds from 0.000001 to 60": the whole allowed range, for a
 * value of the wrong type or below the minimum. Times have a resolution of one microsecond, so
 * a positive time that rounds to 0 us is out of range too. */
static int range_message(int i, uint64_t max, const char *stage, struct ev_err *err)
{
    const char *name = limit_names[i];
    if (limit_is_seconds[i]) {
        char m[32];
        format_seconds(max, m, sizeof(m));
        return ev_fail(err, 0, "Invalid %s limits: %s must be a number of seconds from %s to %s",
                       stage, name, i == LIM_EXTRA_TIME ? "0" : "0.000001", m);
    }
    return ev_fail(err, 0, "Invalid %s limits: %s must be a whole number%s from 1 to %llu", stage,
                   name, limit_units[i][0] ? " of kilobytes" : "", (unsigned long long)max);
}

int limit_check(int i, double v, uint64_t max, const char *stage, uint64_t *out, struct ev_err *err)
{
    bool zero_ok = i == LIM_EXTRA_TIME;
    /* NaN (a value of the wrong type reaches here as NaN), infinities, negatives. */
    if (!isfinite(v) || v < 0 || (v == 0 && !zero_ok) || (!limit_is_seconds[i] && floor(v) != v)) {
        return range_message(i, max, stage, err);
    }
    double scaled = limit_is_seconds[i] ? v * 1e6 : v;
    /* The comparison is in doubles, so values far beyond uint64_t never reach a conversion. */
    if (scaled > (double)max) {
        char m[64];
        format_max(i, max, m, sizeof(m));
        return ev_fail(err, 0, "Invalid %s limits: %s can't exceed %s", stage, limit_names[i], m);
    }
    uint64_t u = (uint64_t)llround(scaled);
    if (u > max)
        u = max;
    if (u == 0 && !zero_ok) {
        return range_message(i, max, stage, err);
    }
    *out = u;
    return 0;
}

void limits_to_array(const struct ev_limits *l, uint64_t v[LIM_COUNT])
{
    v[LIM_WALL_TIME] = l->wall_time_us;
    v[LIM_CPU_TIME] = l->cpu_time_us;
    v[LIM_MEMORY] = l->memory_kb;
    v[LIM_EXTRA_TIME] = l->extra_time_us;
    v[LIM_MAX_OPEN_FILES] = l->max_open_files;
    v[LIM_MAX_FILE_SIZE] = l->max_file_size_kb;
    v[LIM_MAX_PROCESSES] = l->max_processes;
}

void limits_from_array(const uint64_t v[LIM_COUNT], struct ev_limits *l)
{
    *l = (struct ev_limits){
        .wall_time_us = v[LIM_WALL_TIME],
        .cpu_time_us = v[LIM_CPU_TIME],
        .extra_time_us = v[LIM_EXTRA_TIME],
        .memory_kb = v[LIM_MEMORY],
        .max_open_files = v[LIM_MAX_OPEN_FILES],
        .max_file_size_kb = v[LIM_MAX_FILE_SIZE],
        .max_processes = v[LIM_MAX_PROCESSES],
    };
}

int limits_resolve(const struct limit_request *req, const struct ev_limits *max, const char *stage,
                   struct ev_limits *out, struct ev_err *err)
{
    uint64_t maxv[LIM_COUNT], val[LIM_COUNT];
    limits_to_array(max, maxv);
    for (int i = 0; i < LIM_COUNT; i++) {
        val[i] = maxv[i];
        if (req && req->present[i] &&
            limit_check(i, req->value[i], maxv[i], stage, &val[i], err) < 0)
            return -1;
    }
    limits_from_array(val, out);
    return 0;
}

void limits_override(const struct ev_limits *system, const struct limit_override *o,
                     struct ev_limits *out)
{
    uint64_t v[LIM_COUNT];
    limits_to_array(system, v);
    for (int i = 0; o && i < LIM_COUNT; i++)
        if (o->present[i] && o->value[i] < v[i])
            v[i] = o->value[i];
    limits_from_array(v, out);
}
