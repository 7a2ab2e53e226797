/* libFuzzer target: the HTTP layer's request parsing and validation. The first byte picks
 * the parser: POST /execute (then its limits against a configuration, and the base64 of a
 * project), or POST /runtimes (with and without Nix). The rest is the body, as a client
 * would send it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "http/request.h"
#include "common/filename.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    /* libmicrohttpd's body buffer is NUL-terminated; parsers get (body, len). */
    char *body = malloc(size);
    if (!body)
        return 0;
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    struct ev_err err;
    if (sel & 1) {
        struct runtime rt;
        if (parse_runtime(body, size - 1, sel & 2, &rt, &err) == 0) {
            if (!plain_file_name(rt.source_file_name))
                abort(); /* a name the helper would refuse got through */
            runtime_free(&rt);
        }
    } else {
        struct execute_body b;
        if (parse_execute(body, size - 1, &b, &err) == 0) {
            static const struct ev_limits max = {60000000, 30000000, 5000000, 1000000,
                                                 64,       100000,   64};
            struct ev_limits out;
            if (limits_resolve(&b.compile, &max, "compile", &out, &err) == 0 &&
                (out.wall_time_us > max.wall_time_us || out.cpu_time_us > max.cpu_time_us ||
                 out.memory_kb > max.memory_kb || out.extra_time_us > max.extra_time_us ||
                 out.max_open_files > max.max_open_files ||
                 out.max_file_size_kb > max.max_file_size_kb ||
                 out.max_processes > max.max_processes || out.wall_time_us == 0 ||
                 out.cpu_time_us == 0 || out.memory_kb == 0 || out.max_processes == 0))
                abort(); /* a limit out of bounds was accepted */
            size_t len, bad;
            free(base64_decode(b.source, b.source_len, &len, &bad));
            execute_body_free(&b);
        }
    }
    free(body);
    return 0;
}
