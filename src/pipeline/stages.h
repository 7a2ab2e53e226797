/* The steps a submission is made of, shared inside the pipeline layer (pipeline.c runs one
 * program once; judge.c runs it against many tests): the environment a runtime's programs get,
 * building the program in its box (extract, source, compile), and one run in that box. */
#ifndef ENVICUTOR_STAGES_H
#define ENVICUTOR_STAGES_H

#include <stdbool.h>
#include <stddef.h>

#include "pipeline/pipeline.h"

#define MAX_ENV_ENTRIES 200

struct abort_ctx {
    struct pipeline *p;
    pipe_abort_fn fn;
    void *ctx;
    const char *request_id;            /* for the helper's log lines about the runs; may be NULL */
    const struct stage_stream *stream; /* the request's, or NULL */
};

/* True when the server stops or the request's client went away. */
bool should_abort(void *arg);

/* What the runs of one runtime's program share: the runtime (NULL: no runtime, the plain
 * environment), its environment and the bash its scripts run with. */
struct program_env {
    const struct runtime *rt;
    bool nix;
    char *bash;
    char *envp[MAX_ENV_ENTRIES + 8];
    char *nix_path; /* owned: the PATH entry of a Nix runtime */
};
void program_env_init(struct program_env *pe, const struct runtime *rt);
void program_env_free(struct program_env *pe);

/* The argv of a runtime's script. bash -c runs a script that is one simple command by exec'ing
 * it; such a script made of plain words (letters, digits and _ . / + = : , @ % -, no quoting,
 * expansion, redirection or builtin) is exec'd directly instead, without bash's start-up, with
 * the same outcome: the same program, arguments, exit status or signal, and a program that
 * cannot be run is RE 127 as from a shell. Anything else runs as bash -c SCRIPT NAME. */
struct script_argv {
    char *words; /* owned: the split copy of a plain script */
    char *argv[PS_MAX_ARGS + 1];
};
void script_argv_init(struct script_argv *sa, const char *bash, const char *script,
                      const char *name);
void script_argv_free(struct script_argv *sa);

struct build_request {
    const char *source; /* the file, or the zip archive of a project */
    size_t source_len;
    bool is_project;
    const struct ev_limits *compile;
};

/* Extracts a project or writes the source file, then runs the compile script when the runtime
 * has one: out->ran / out->res of STAGE_EXTRACT and STAGE_COMPILE are filled as they run.
 * PIPE_OK with *built true when the program is ready to run, false when a stage failed (its
 * result says how); another status when the request itself failed. */
enum pipe_status stage_build(struct pipeline *p, uint32_t box, const struct program_env *pe,
                             const struct build_request *b, struct abort_ctx *ac,
                             struct exec_outcome *out, bool *built, struct ev_err *err);

/* One run in box with pe's runtime, environment and the limits l; run carries argv, the
 * input and the run's options (the rest is filled here). */
enum pipe_status stage_run(struct pipeline *p, uint32_t box, const struct program_env *pe,
                           struct psc_run *run, const struct ev_limits *l, struct abort_ctx *ac,
                           struct sbx_result *res, struct ev_err *err);

/* Opens a stored file (the file store) for reading: 0 with *fd, or -1 (an unknown id says
 * "File with id: X does not exist"). */
int stage_open_file(struct pipeline *p, const char *id, int *fd, struct ev_err *err);

/* judge.c: builds the program in box, then runs it against each test (SPEC §8); fills
 * out->judge. */
enum pipe_status judge_in_box(struct pipeline *p, uint32_t box, const struct exec_request *req,
                              struct abort_ctx *ac, struct exec_outcome *out, struct ev_err *err);
void judge_outcome_free(struct judge_outcome *j);

#endif
