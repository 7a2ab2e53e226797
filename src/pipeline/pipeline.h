/* The execution pipeline and the runtime operations, on top of the scheduler, the runtime
 * store and the privileged helper. Knows runtimes and the sandbox; knows nothing of HTTP.
 *
 * A submission: a box (a fresh size-limited directory with a uid of its own) that carries over
 * from stage to stage, and up to three stages, each a fresh sandbox run with its own cgroup:
 *   extract  (projects) unzip the archive inside the box, with the compile limits;
 *   compile  (runtimes with a compile script) the compile script, compile limits;
 *   run      the run script with the input on stdin, run limits.
 * Scripts run as `bash -c SCRIPT`, not `bash FILE`: bash then execs the script's last simple
 * command instead of forking it, so a program killed by a signal is reported as killed (SG),
 * not as a shell that exited with 128 + the signal (RE). The same scripts are in the runtime's
 * directory, mounted at /runtime, for reference.
 * A stage that does not succeed stops the pipeline. */
#ifndef ENVICUTOR_PIPELINE_H
#define ENVICUTOR_PIPELINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "pipeline/config.h"
#include "pipeline/file_store.h"
#include "pipeline/runtime_store.h"
#include "pipeline/scheduler.h"
#include "privsep/client.h"
#include "sandbox/sandbox.h"

struct pipeline {
    const struct ev_config *cfg;
    struct psc *psc;
    struct store *store;
    struct file_store *files; /* uploaded test files (set by its owner after pipeline_init) */
    struct sched sched;
    atomic_bool stopping;
    struct ccache *cache; /* the compile cache; NULL when COMPILE_CACHE_SIZE is 0 */
};

void pipeline_init(struct pipeline *p, const struct ev_config *cfg, struct psc *psc,
                   struct store *store);
/* Opens the compile cache under the data directory (nothing when COMPILE_CACHE_SIZE is 0); after
 * store_sweep, whose removals it follows by dropping the groups of runtimes that are gone. */
int pipeline_open_cache(struct pipeline *p, struct ev_err *err);

/* The request id (common/request_id.h) of what the calling thread asks of the pipeline from
 * now on, or NULL for none; copied. The HTTP layer sets it in the thread that runs a request,
 * so that the helper's log lines about its runs carry the id without every entry point of the
 * pipeline taking one more argument. */
void pipeline_set_request_id(const char *request_id);

/* Refuses new work and kills what runs (each request returns PIPE_STOPPING). */
void pipeline_stop(struct pipeline *p);
/* The gentle first half of a shutdown: refuses new work and what waits (PIPE_STOPPING), lets
 * what runs go on, and waits for it until the monotonic clock reaches deadline_ns. Returns
 * whether nothing runs any more; pipeline_stop then kills what still does. */
bool pipeline_drain(struct pipeline *p, uint64_t deadline_ns);
void pipeline_destroy(struct pipeline *p);

enum pipe_status {
    PIPE_OK = 0,
    PIPE_NO_RUNTIME, /* execute: unknown runtime; delete: not found */
    PIPE_QUEUE_FULL, /* 503 */
    PIPE_ABORTED,    /* the client went away */
    PIPE_STOPPING,   /* the server is shutting down */
    PIPE_NAME_TAKEN, /* install */
    PIPE_ID_TAKEN,   /* install with an id the client chose */
    PIPE_SETUP_FAILED /* install/update: output in the outcome */,
    PIPE_INTERNAL, /* err says why */
};

enum stage { STAGE_EXTRACT, STAGE_COMPILE, STAGE_RUN, STAGE_COUNT };

/* Judge mode (SPEC §8): one program, many tests, a verdict for each. */
enum verdict {
    VERDICT_AC,
    VERDICT_WA,
    VERDICT_PE,
    VERDICT_TLE,
    VERDICT_MLE,
    VERDICT_OLE,
    VERDICT_RE,
    VERDICT_SG,
    VERDICT_CF,
    VERDICT_XX,
    VERDICT_SKIPPED,
};
const char *verdict_name(enum verdict v);

/* A test's input or expected output: the bytes, or the id of a stored file (file_id). */
struct judge_text {
    bool present;
    const char *data;
    size_t len;
    const char *file_id;
};

struct judge_test {
    struct judge_text input, expected;
};

/* A custom checker or an interactor: compiled once per request in a box of its own, run with
 * its runtime's limits. */
struct judge_program {
    const struct runtime *rt; /* read once, like the submission's */
    const char *source;
    size_t source_len;
    struct ev_limits compile, run;
};

struct judge_request {
    const struct judge_test *tests;
    size_t n_tests;
    int checker;                            /* enum checker_kind (pipeline/checker.h) */
    double eps;                             /* CHECKER_FLOAT */
    const struct judge_program *custom;     /* CHECKER_CUSTOM: the checker */
    const struct judge_program *interactor; /* or NULL */
    bool stop_on_first_failure;
};

struct judge_test_result {
    enum verdict verdict;
    bool ran; /* run holds the program's run (SKIPPED tests and builds that failed: false) */
    struct sbx_result run;
    char *message; /* the checker's or interactor's first line, or why it failed; or NULL */
};

struct judge_outcome {
    struct judge_test_result *tests;
    size_t n_tests;
    enum verdict verdict;
    /* the build of the checker or interactor, when there is one */
    bool helper_ran[STAGE_COUNT];
    struct sbx_result helper_res[STAGE_COUNT];
    bool helper_cached; /* its compile came from the compile cache */
};

/* A submission whose stages stream (the WebSocket of /execute/ws): before each stage's run,
 * begin gets the server's ends of its pipes: stdin's write end (-1 for extract and compile,
 * whose stdin is empty), stdout's and stderr's read ends, all O_CLOEXEC and the callee's to
 * close; the box's ends go to the run. end follows with the stage's result (NULL when the run
 * failed or was aborted). The callee reads and writes the pipes as the program runs, from
 * another thread: nothing of the output is kept in the result. Such a build never uses the
 * compile cache (its output is the client's, as it is written). */
struct stage_stream {
    void (*begin)(void *ctx, enum stage stage, uint32_t box, int in_w, int out_r, int err_r);
    void (*end)(void *ctx, enum stage stage, const struct sbx_result *res);
    void *ctx;
};

struct exec_request {
    /* The runtime as read once, before the request's limits were checked against its own; the
     * run uses this copy, never a second read (see pipeline_execute). */
    const struct runtime *rt;
    const char *source; /* the file, or the zip archive of a project */
    size_t source_len;
    bool is_project;
    const char *input;
    size_t input_len;
    const char *input_file; /* or the id of a stored file, the run's stdin (a plain run) */
    struct ev_limits compile, run;
    const struct judge_request *judge; /* NULL: one run with input */
    const struct stage_stream *stream; /* NULL: outputs kept in the outcome */
};

struct exec_outcome {
    bool ran[STAGE_COUNT];
    struct sbx_result res[STAGE_COUNT];
    struct judge_outcome *judge; /* judge mode: the tests (res[STAGE_RUN] is not used) */
    /* The extract and compile results (and the box's files after them) came from the compile
     * cache: no compile ran for this request. */
    bool cached;
};
void exec_outcome_free(struct exec_outcome *o);

typedef bool (*pipe_abort_fn)(void *ctx);

/* Waits for a turn, then runs req->rt if it is still the installed runtime under its id:
 * PIPE_NO_RUNTIME when it was deleted while the request waited, even if another runtime has
 * been installed under the same id since (its limits were never checked for this request). */
enum pipe_status pipeline_execute(struct pipeline *p, const struct exec_request *req,
                                  pipe_abort_fn abort_fn, void *ctx, struct exec_outcome *out,
                                  struct ev_err *err);

/* The same in two steps, for a request that waits without a thread (the HTTP layer's
 * /execute). pipeline_enqueue queues t (its notify, tag and costs set by the caller; see
 * sched_enqueue_job): PIPE_OK when it is granted at once (t->granted) or queued, PIPE_QUEUE_FULL
 * or PIPE_STOPPING. Once granted, pipeline_execute_granted runs the request and gives the turn
 * back; a granted request that is not run gives it back with pipeline_release.
 * pipeline_withdraw takes a waiting ticket out by its tag and returns it: NULL when it was no
 * longer waiting (granted or refused already). */
enum pipe_status pipeline_enqueue(struct pipeline *p, struct sched_ticket *t);
struct sched_ticket *pipeline_withdraw(struct pipeline *p, uint64_t tag);
void pipeline_release(struct pipeline *p);
/* Calls fn, under the scheduler's lock, for each waiting ticket with the number ahead of it. */
void pipeline_each_waiting(struct pipeline *p,
                           void (*fn)(struct sched_ticket *t, unsigned ahead, void *ctx),
                           void *ctx);
/* Waits for a submission turn in a thread (abort_fn polled while it waits): PIPE_OK, then run
 * with pipeline_execute_granted; PIPE_ABORTED or PIPE_STOPPING. */
enum pipe_status pipeline_acquire(struct pipeline *p, pipe_abort_fn abort_fn, void *ctx);
enum pipe_status pipeline_execute_granted(struct pipeline *p, const struct exec_request *req,
                                          pipe_abort_fn abort_fn, void *ctx,
                                          struct exec_outcome *out, struct ev_err *err);

/* Installs rt (name, provider, scripts, source file name, env). For a host runtime the set-up
 * checks the scripts' syntax inside a sandbox; its output lands in *out / *errout (malloc'ed,
 * also on PIPE_SETUP_FAILED). */
enum pipe_status pipeline_install(struct pipeline *p, struct runtime *rt, pipe_abort_fn abort_fn,
                                  void *ctx, char **out, char **errout, struct ev_err *err);
enum pipe_status pipeline_delete(struct pipeline *p, int64_t id, pipe_abort_fn abort_fn, void *ctx,
                                 struct ev_err *err);
/* The package manager update (Nix). Without Nix it fails with a message in *errout. */
enum pipe_status pipeline_update(struct pipeline *p, pipe_abort_fn abort_fn, void *ctx, char **out,
                                 char **errout, struct ev_err *err);

/* Garbage collection (exclusive work): removes runtime directories without a row, then, with
 * Nix, every store path that no GC root keeps (each Nix runtime's directory holds roots for
 * the store paths its environment names). */
struct gc_outcome {
    size_t dirs_removed;
    bool nix, ok; /* ok: nix-store --gc exited 0 (or there is no Nix) */
    char **paths; /* store paths deleted */
    size_t n_paths;
    char *out, *err; /* nix-store's output; NULL without Nix */
};
void gc_outcome_free(struct gc_outcome *g);
enum pipe_status pipeline_gc(struct pipeline *p, pipe_abort_fn abort_fn, void *ctx,
                             struct gc_outcome *g, struct ev_err *err);

/* Whether the file store holds a file with this id (a 64-character sha256 in hex). */
int pipeline_file_exists(struct pipeline *p, const char *id, bool *found, struct ev_err *err);

/* Whether nix-shell can be found (for the Nix provider). */
bool nix_available(void);

#endif
