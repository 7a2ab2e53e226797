#include "http/request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/filename.h"
#include "pipeline/checker.h"

#define NAME_MAX_BYTES 128
#define ENV_MAX_BYTES 32768
#define ENV_MAX_VARS 150
#define SCRIPT_MAX_BYTES 16384

static int load_object(const char *body, size_t len, json_t **out, struct ev_err *err)
{
    json_error_t e;
    json_t *root =
        json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!root) {
        return ev_fail(err, 0, "Invalid JSON: %s (line %d, column %d)", e.text, e.line, e.column);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return ev_fail(err, 0, "The request body must be a JSON object");
    }
    *out = root;
    return 0;
}

static int parse_limits(json_t *v, const char *stage, struct limit_request *out, struct ev_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v)) {
        return ev_fail(err, 0, "%s_limits must be an object", stage);
    }
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        int i = 0;
        while (i < LIM_COUNT && strcmp(key, limit_names[i]) != 0)
            i++;
        if (i == LIM_COUNT) {
            return ev_fail(err, 0, "Invalid %s limits: unknown limit %.64s", stage, key);
        }
        if (json_is_null(val))
            continue;
        /* A value of the wrong type (a string, a boolean, an object) is NaN here, so that the
         * limit check answers with the limit's name and allowed range. */
        out->present[i] = true;
        out->value[i] = json_is_number(val) ? json_number_value(val) : NAN;
    }
    return 0;
}

static int parse_execute_root(struct execute_body *out, struct ev_err *err);

/* ---- judge mode ---------------------------------------------------------------------------- */

/* A stored file's id where one may stand: a string (whether such a file exists is the
 * route's to check, with the store). */
static int file_id_field(json_t *v, const char *what, const char **out, struct ev_err *err)
{
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return ev_fail(err, 0, "%s must be a string (a file id)", what);
    *out = json_string_value(v);
    return 0;
}

/* One of a test's texts: "NAME" (a string) or "NAME_file" (a stored file), not both. */
static int parse_text(json_t *test, size_t i, const char *name, struct judge_text *t,
                      struct ev_err *err)
{
    char file_key[40], what[80];
    snprintf(file_key, sizeof(file_key), "%s_file", name);
    json_t *v = json_object_get(test, name);
    json_t *f = json_object_get(test, file_key);
    bool has_v = v && !json_is_null(v), has_f = f && !json_is_null(f);
    memset(t, 0, sizeof(*t));
    if (has_v && has_f)
        return ev_fail(err, 0, "tests[%zu]: %s and %s are mutually exclusive", i, name, file_key);
    if (has_v) {
        if (!json_is_string(v))
            return ev_fail(err, 0, "tests[%zu].%s must be a string", i, name);
        t->present = true;
        t->data = json_string_value(v);
        t->len = json_string_length(v);
    } else if (has_f) {
        snprintf(what, sizeof(what), "tests[%zu].%s", i, file_key);
        if (file_id_field(f, what, &t->file_id, err) < 0)
            return -1;
        t->present = true;
    }
    return 0;
}

static int parse_program(json_t *v, const char *what, struct program_body *pb, struct ev_err *err)
{
    json_t *id = json_object_get(v, "runtime_id"), *src = json_object_get(v, "source_code");
    if (!id || json_is_null(id))
        return ev_fail(err, 0, "%s.runtime_id is required", what);
    if (!json_is_integer(id))
        return ev_fail(err, 0, "%s.runtime_id must be an integer", what);
    if (!src || json_is_null(src))
        return ev_fail(err, 0, "%s.source_code is required", what);
    if (!json_is_string(src))
        return ev_fail(err, 0, "%s.source_code must be a string", what);
    pb->runtime_id = json_integer_value(id);
    pb->source = json_string_value(src);
    pb->source_len = json_string_length(src);
    return 0;
}

#define CHECKER_CHOICES                                                                            \
    "\"exact\", \"lines\", \"tokens\", {\"float\": EPSILON} or {\"runtime_id\": N, "               \
    "\"source_code\": \"...\"}"

static int parse_checker(json_t *v, struct execute_body *out, struct ev_err *err)
{
    out->checker = CHECKER_LINES;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        int k = checker_from_name(json_string_value(v));
        if (k == CHECKER_FLOAT)
            return ev_fail(err, 0, "The float checker needs its error: {\"float\": 1e-6}");
        if (k < 0)
            return ev_fail(err, 0, "Unknown checker: \"%.32s\" (expected " CHECKER_CHOICES ")",
                           json_string_value(v));
        out->checker = k;
        return 0;
    }
    if (json_is_object(v) && json_object_get(v, "float")) {
        json_t *e = json_object_get(v, "float");
        double eps = json_is_number(e) ? json_number_value(e) : -1;
        if (json_object_size(v) != 1 || !json_is_number(e) || !(eps >= 0) || eps > 1e300)
            return ev_fail(err, 0,
                           "checker.float must be a non-negative number (the absolute or "
                           "relative error allowed)");
        out->checker = CHECKER_FLOAT;
        out->eps = eps;
        return 0;
    }
    if (json_is_object(v) && json_object_get(v, "runtime_id")) {
        out->checker = CHECKER_CUSTOM;
        return parse_program(v, "checker", &out->checker_program, err);
    }
    return ev_fail(err, 0, "Unknown checker (expected " CHECKER_CHOICES ")");
}

static int parse_judge(struct execute_body *out, struct ev_err *err)
{
    json_t *root = out->root;
    json_t *tests = json_object_get(root, "tests");
    json_t *checker = json_object_get(root, "checker");
    json_t *inter = json_object_get(root, "interactor");
    json_t *stop = json_object_get(root, "stop_on_first_failure");
    if (file_id_field(json_object_get(root, "input_file"), "input_file", &out->input_file, err) < 0)
        return -1;
    if (out->input_file && out->input)
        return ev_fail(err, 0, "input and input_file are mutually exclusive");
    bool has_tests = tests && !json_is_null(tests);
    if (!has_tests) {
        if (checker && !json_is_null(checker))
            return ev_fail(err, 0, "checker needs tests: it compares each test's output");
        if (inter && !json_is_null(inter))
            return ev_fail(err, 0, "interactor needs tests");
        if (stop && !json_is_null(stop))
            return ev_fail(err, 0, "stop_on_first_failure needs tests");
        return 0;
    }
    if (!json_is_array(tests))
        return ev_fail(err, 0, "tests must be an array of objects");
    if (json_array_size(tests) == 0)
        return ev_fail(err, 0, "tests must not be empty");
    if (out->input || out->input_file)
        return ev_fail(err, 0, "input and tests are mutually exclusive: each test has its input");
    out->judge = true;
    out->n_tests = json_array_size(tests);
    out->tests = calloc(out->n_tests, sizeof(*out->tests));
    if (!out->tests)
        return ev_fail(err, 0, "Out of memory");
    for (size_t i = 0; i < out->n_tests; i++) {
        json_t *t = json_array_get(tests, i);
        if (!json_is_object(t))
            return ev_fail(err, 0, "tests[%zu] must be an object", i);
        if (parse_text(t, i, "input", &out->tests[i].input, err) < 0 ||
            parse_text(t, i, "expected_output", &out->tests[i].expected, err) < 0)
            return -1;
    }
    if (parse_checker(checker, out, err) < 0)
        return -1;
    if (inter && !json_is_null(inter)) {
        if (!json_is_object(inter))
            return ev_fail(err, 0,
                           "interactor must be an object: {\"runtime_id\": N, "
                           "\"source_code\": \"...\"}");
        if (checker && !json_is_null(checker))
            return ev_fail(err, 0,
                           "checker and interactor are mutually exclusive: the "
                           "interactor decides the verdict");
        if (parse_program(inter, "interactor", &out->interactor, err) < 0)
            return -1;
        out->has_interactor = true;
    }
    if (stop && !json_is_null(stop)) {
        if (!json_is_boolean(stop))
            return ev_fail(err, 0, "stop_on_first_failure must be a boolean");
        out->stop_on_first_failure = json_is_true(stop);
    }
    return 0;
}

int parse_execute(const char *body, size_t len, struct execute_body *out, struct ev_err *err)
{
    memset(out, 0, sizeof(*out));
    if (load_object(body, len, &out->root, err) < 0)
        return -1;
    return parse_execute_root(out, err);
}

int parse_execute_fd(int fd, struct execute_body *out, struct ev_err *err)
{
    memset(out, 0, sizeof(*out));
    json_error_t e;
    /* jansson reads through a small buffer: the raw text is never in memory as a whole */
    if (lseek(fd, 0, SEEK_SET) < 0) {
        return ev_fail(err, 0, "Invalid JSON: the body could not be read");
    }
    json_t *root = json_loadfd(fd, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!root) {
        return ev_fail(err, 0, "Invalid JSON: %s (line %d, column %d)", e.text, e.line, e.column);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return ev_fail(err, 0, "The request body must be a JSON object");
    }
    out->root = root;
    return parse_execute_root(out, err);
}

static int parse_execute_root(struct execute_body *out, struct ev_err *err)
{
    json_t *id = json_object_get(out->root, "runtime_id");
    json_t *src = json_object_get(out->root, "source_code");
    json_t *in = json_object_get(out->root, "input");
    if (!id || json_is_null(id)) {
        ev_fail(err, 0, "runtime_id is required");
        goto fail;
    }
    if (!json_is_integer(id)) {
        ev_fail(err, 0, "runtime_id must be an integer");
        goto fail;
    }
    out->runtime_id = json_integer_value(id);
    if (!src || json_is_null(src)) {
        ev_fail(err, 0, "source_code is required");
        goto fail;
    }
    if (!json_is_string(src)) {
        ev_fail(err, 0, "source_code must be a string");
        goto fail;
    }
    out->source = json_string_value(src);
    out->source_len = json_string_length(src);
    if (in && !json_is_null(in)) {
        if (!json_is_string(in)) {
            ev_fail(err, 0, "input must be a string");
            goto fail;
        }
        out->input = json_string_value(in);
        out->input_len = json_string_length(in);
    }
    if (parse_limits(json_object_get(out->root, "compile_limits"), "compile", &out->compile, err) <
            0 ||
        parse_limits(json_object_get(out->root, "run_limits"), "run", &out->run, err) < 0)
        goto fail;
    if (parse_judge(out, err) < 0)
        goto fail;
    return 0;
fail:
    execute_body_free(out);
    return -1;
}

void execute_body_free(struct execute_body *b)
{
    json_decref(b->root);
    b->root = NULL;
    free(b->tests);
    b->tests = NULL;
    b->n_tests = 0;
}

/* A string field: absent or null reads as "", anything else but a string is an error. */
static int get_string(json_t *root, const char *key, const char **out, struct ev_err *err)
{
    json_t *v = json_object_get(root, key);
    *out = "";
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        return ev_fail(err, 0, "%s must be a string", key);
    }
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v)) {
        if (strcmp(key, "source_file_name") == 0)
            return ev_fail(err, 0, "Invalid source file name");
        return ev_fail(err, 0, "%s must not contain NUL characters", key);
    }
    return 0;
}

static int env_name_ok(const char *k)
{
    if (!*k || (*k >= '0' && *k <= '9'))
        return 0;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return 0;
    return 1;
}

static int parse_env(json_t *v, struct runtime *rt, struct ev_err *err)
{
    rt->env = calloc(1, 1);
    rt->env_len = 0;
    if (!rt->env) {
        return ev_fail(err, 0, "Out of memory");
    }
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v)) {
        return ev_fail(err, 0, "env must be an object of strings");
    }
    if (json_object_size(v) > ENV_MAX_VARS) {
        return ev_fail(err, 0, "env: at most %d variables", ENV_MAX_VARS);
    }
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (!env_name_ok(key)) {
            return ev_fail(err, 0, "env: invalid variable name '%.64s'", key);
        }
        if (!json_is_string(val)) {
            return ev_fail(err, 0, "env: the value of %.64s must be a string", key);
        }
        const char *s = json_string_value(val);
        size_t vlen = json_string_length(val), klen = strlen(key);
        if (strlen(s) != vlen) {
            return ev_fail(err, 0, "env: the value of %.64s must not contain NUL characters", key);
        }
        size_t add = klen + 1 + vlen + 1;
        if (rt->env_len + add > ENV_MAX_BYTES) {
            return ev_fail(err, 0, "env: at most %d bytes in all", ENV_MAX_BYTES);
        }
        char *p = realloc(rt->env, rt->env_len + add + 1);
        if (!p) {
            return ev_fail(err, 0, "Out of memory");
        }
        rt->env = p;
        memcpy(p + rt->env_len, key, klen);
        p[rt->env_len + klen] = '=';
        memcpy(p + rt->env_len + klen + 1, s, vlen);
        rt->env_len += add;
        p[rt->env_len - 1] = '\0';
        p[rt->env_len] = '\0';
    }
    return 0;
}

int parse_runtime(const char *body, size_t len, bool nix_ok, struct runtime *rt, struct ev_err *err)
{
    memset(rt, 0, sizeof(*rt));
    json_t *root;
    if (load_object(body, len, &root, err) < 0)
        return -1;
    const char *name, *nix, *compile, *run, *file, *provider;
    int rc = -1;
    if (get_string(root, "name", &name, err) < 0 || get_string(root, "nix_shell", &nix, err) < 0 ||
        get_string(root, "compile_script", &compile, err) < 0 ||
        get_string(root, "run_script", &run, err) < 0 ||
        get_string(root, "source_file_name", &file, err) < 0 ||
        get_string(root, "provider", &provider, err) < 0)
        goto out;
    bool host = strcmp(provider, "host") == 0;
    if (!host && provider[0] && strcmp(provider, "nix") != 0) {
        ev_fail(err, 0, "Unknown provider: \"%.32s\" (expected \"host\" or \"nix\")", provider);
        goto out;
    }
    if (!name[0]) {
        ev_fail(err, 0, "Name can't be empty");
        goto out;
    }
    if (strlen(name) > NAME_MAX_BYTES) {
        ev_fail(err, 0, "Name can't be longer than %d bytes", NAME_MAX_BYTES);
        goto out;
    }
    if (!host && !nix[0]) {
        ev_fail(err, 0, "Nix shell can't be empty");
        goto out;
    }
    if (!run[0]) {
        ev_fail(err, 0, "Run command can't be empty");
        goto out;
    }
    if (strlen(run) > SCRIPT_MAX_BYTES || strlen(compile) > SCRIPT_MAX_BYTES) {
        ev_fail(err, 0, "Scripts can't be longer than %d bytes", SCRIPT_MAX_BYTES);
        goto out;
    }
    if (!file[0]) {
        ev_fail(err, 0, "Source file name can't be empty");
        goto out;
    }
    if (!plain_file_name(file) ||
        json_string_length(json_object_get(root, "source_file_name")) != strlen(file)) {
        ev_fail(err, 0, "Invalid source file name");
        goto out;
    }
    if (host && json_object_get(root, "env") == NULL) {
        /* fine: no extra variables */
    } else if (!host && json_object_get(root, "env") &&
               !json_is_null(json_object_get(root, "env"))) {
        ev_fail(err, 0, "env is only for host runtimes (\"provider\": \"host\")");
        goto out;
    }
    if (!host && !nix_ok) {
        ev_fail(err, 0,
                "Nix is not available on this server: install Nix, or use \"provider\": \"host\" "
                "for a runtime on the host's own toolchains");
        goto out;
    }
    if (parse_env(json_object_get(root, "env"), rt, err) < 0)
        goto out;
    rt->name = strdup(name);
    rt->provider = strdup(host ? "host" : "nix");
    rt->source_file_name = strdup(file);
    rt->compile_script = strdup(compile);
    rt->run_script = strdup(run);
    rt->nix_shell = strdup(nix);
    if (!rt->name || !rt->provider || !rt->source_file_name || !rt->compile_script ||
        !rt->run_script || !rt->nix_shell) {
        ev_fail(err, 0, "Out of memory");
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        runtime_free(rt);
    json_decref(root);
    return rc;
}

static int parse_override(json_t *v, const char *stage, const struct ev_limits *max,
                          struct limit_override *o, struct ev_err *err)
{
    struct limit_request req;
    memset(o, 0, sizeof(*o));
    if (parse_limits(v, stage, &req, err) < 0)
        return -1;
    uint64_t maxv[LIM_COUNT];
    limits_to_array(max, maxv);
    for (int i = 0; i < LIM_COUNT; i++) {
        if (!req.present[i])
            continue;
        if (limit_check(i, req.value[i], maxv[i], stage, &o->value[i], err) < 0)
            return -1;
        o->present[i] = true;
    }
    return 0;
}

#define MAX_RUNTIME_ID 9007199254740991ll /* 2^53 - 1: exact in every JSON client */

int parse_runtime_options(const char *body, size_t len, const struct ev_limits *compile_max,
                          const struct ev_limits *run_max, struct runtime *rt, struct ev_err *err)
{
    json_t *root;
    if (load_object(body, len, &root, err) < 0)
        return -1;
    int rc = -1;
    json_t *id = json_object_get(root, "id");
    rt->id = 0;
    if (id && !json_is_null(id)) {
        if (!json_is_integer(id) || json_integer_value(id) < 1 ||
            json_integer_value(id) > MAX_RUNTIME_ID) {
            ev_fail(err, 0, "id must be an integer from 1 to %lld", MAX_RUNTIME_ID);
            goto out;
        }
        rt->id = json_integer_value(id);
    }
    if (parse_override(json_object_get(root, "compile_limits"), "compile", compile_max,
                       &rt->compile_limits, err) < 0 ||
        parse_override(json_object_get(root, "run_limits"), "run", run_max, &rt->run_limits, err) <
            0)
        goto out;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int64_t parse_id(const char *text)
{
    if (!text || !*text || strlen(text) > 18)
        return -1;
    int64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v > 0 ? v : -1;
}
