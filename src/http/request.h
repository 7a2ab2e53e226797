/* Parsing and validation of request bodies into the pipeline's plain structs, with the exact
 * client-facing messages of SPEC §4. No I/O: tested on its own. */
#ifndef ENVICUTOR_REQUEST_H
#define ENVICUTOR_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"
#include "pipeline/runtime_store.h"

/* A checker or an interactor of judge mode: a program of its own. */
struct program_body {
    int64_t runtime_id;
    const char *source;
    size_t source_len;
};

struct execute_body {
    json_t *root; /* owns the strings below */
    int64_t runtime_id;
    const char *source;
    size_t source_len;
    const char *input; /* NULL when absent */
    size_t input_len;
    const char *input_file; /* a stored file's id, or NULL */
    struct limit_request compile, run;
    /* Judge mode (SPEC §8): "tests" present. The strings point into root. */
    bool judge;
    struct judge_test *tests; /* malloc'ed */
    size_t n_tests;
    int checker; /* enum checker_kind */
    double eps;
    struct program_body checker_program; /* checker == CHECKER_CUSTOM */
    bool has_interactor;
    struct program_body interactor;
    bool stop_on_first_failure;
};

/* 0, or -1 with the message of a 400 in err (errnum 0: the message is the client's whole
 * answer). */
int parse_execute(const char *body, size_t len, struct execute_body *out, struct ev_err *err);
/* The same from a body in a file (read from its start). */
int parse_execute_fd(int fd, struct execute_body *out, struct ev_err *err);
void execute_body_free(struct execute_body *b);

/* Fills rt (malloc'ed strings; runtime_free releases them). nix_ok says whether the Nix
 * provider is available on this server. */
int parse_runtime(const char *body, size_t len, bool nix_ok, struct runtime *rt,
                  struct ev_err *err);

/* The extensions of POST /runtimes: an optional "id" (a positive integer, at most 2^53 - 1) and
 * optional "compile_limits" / "run_limits", each value within the system's (the *_max). Sets
 * rt->id (0 when absent) and rt->compile_limits / rt->run_limits. 0, or -1 with the message in err.
 */
int parse_runtime_options(const char *body, size_t len, const struct ev_limits *compile_max,
                          const struct ev_limits *run_max, struct runtime *rt, struct ev_err *err);

/* "/runtimes/12" -> 12; -1 when the rest of the path is not a positive decimal id. */
int64_t parse_id(const char *text);

#endif
