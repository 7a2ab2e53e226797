#include "format/stage_json.h"

#include <stdlib.h>

#include "common/base64.h"
#include "common/utf8.h"

static json_t *output_json(const struct sbx_output *o, int base64_output)
{
    const char *data = o->data ? o->data : "";
    if (base64_output) {
        char *enc = base64_encode(data, o->len);
        if (!enc)
            return NULL;
        json_t *s = json_string(enc);
        free(enc);
        return s;
    }
    size_t n;
    char *clean = utf8_sanitize(data, o->len, &n);
    if (!clean)
        return NULL;
    json_t *s = json_stringn(clean, n);
    free(clean);
    return s;
}

static json_t *int_or_null(int v)
{
    return v >= 0 ? json_integer(v) : json_null();
}

json_t *stage_result_json(const struct sbx_result *res, int base64_output)
{
    const char *status = sbx_status_name(res->status);
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "memory", json_integer((json_int_t)res->memory_kb));
    bad |= json_object_set_new(o, "cpu_time", json_real((double)res->cpu_time_us / 1e6));
    bad |= json_object_set_new(o, "wall_time", json_real((double)res->wall_time_us / 1e6));
    bad |= json_object_set_new(o, "exit_code", int_or_null(res->exit_code));
    bad |= json_object_set_new(o, "exit_signal", int_or_null(res->exit_signal));
    bad |= json_object_set_new(o, "exit_status", status ? json_string(status) : json_null());
    bad |= json_object_set_new(o, "exit_message",
                               res->message[0] ? json_string(res->message) : json_null());
    bad |= json_object_set_new(o, "stdout", output_json(&res->out, base64_output));
    bad |= json_object_set_new(o, "stderr", output_json(&res->err, base64_output));
    bad |=
        json_object_set_new(o, "memory_limit_exceeded", json_boolean(res->memory_limit_exceeded));
    bad |= json_object_set_new(o, "stdout_truncated", json_boolean(res->out.truncated));
    bad |= json_object_set_new(o, "stderr_truncated", json_boolean(res->err.truncated));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}
