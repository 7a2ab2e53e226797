/* The unprivileged side of the helper's socket: requests from any number of threads, each
 * waiting for its own reply (matched by request id), with a way to give up on a run when
 * its client has gone away. */
#ifndef ENVICUTOR_CLIENT_H
#define ENVICUTOR_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "privsep/protocol.h"
#include "sandbox/sandbox.h"

struct psc;

/* Polled every few milliseconds while a request waits; true means: cancel the box. */
typedef bool (*psc_abort_fn)(void *ctx);

struct psc *psc_start(int sock, struct ev_err *err);
/* Closes the socket (the helper then cleans up and exits) and frees everything. Requests still
 * waiting fail. */
void psc_stop(struct psc *c);

int psc_open_box(struct psc *c, uint64_t disk_kb, uint64_t max_inodes, uint32_t *box,
                 struct ev_err *err);
int psc_write_file(struct psc *c, uint32_t box, const char *name, unsigned mode, const void *data,
                   size_t len, struct ev_err *err);
int psc_close_box(struct psc *c, uint32_t box, struct ev_err *err);
void psc_cancel(struct psc *c, uint32_t box);
/* Sends sig (SIGKILL, SIGTERM or SIGINT) to every process of the box's current run but its
 * init; nothing when no run is going on. */
void psc_signal(struct psc *c, uint32_t box, int sig);

/* A file that appears, read-only, in the /box of one run (fresh_box runs only): its bytes from
 * data/len, or from a descriptor (fd > 0: a regular file open for reading, read from its
 * start). It is a copy in the run's throw-away layer, owned by root, mode 0444: the program
 * reads it and can never change the caller's bytes. An earlier run's file of that name is
 * hidden by it. At most PS_MAX_FILES, together no larger than the box. */
struct psc_file {
    const char *name; /* a plain file name (no '/') */
    const void *data;
    size_t len;
    int fd;
};

struct psc_run {
    const char *runtime; /* runtime directory name, or NULL */
    char *const *argv;
    char *const *envp;
    const void *input; /* NULL: empty stdin */
    size_t input_len;
    bool input_newline; /* append a newline to the input (written to the memfd, not copied) */
    /* > 0: the program's stdin is this descriptor instead of `input`. The read end of a pipe
     * (an interactor's output) is given to the box as it is. A regular file opened O_RDONLY
     * that no box can write (no write bit for group or others, not owned by a box's user: a
     * stored file) is reopened by the helper and given without a copy, read from its start;
     * any other readable regular file is copied. */
    int input_fd;
    /* > 0: the program's stdout IS this descriptor, the write end of a pipe (to an
     * interactor), instead of being captured; res->out then stays empty. stderr is captured
     * as always, and every limit applies. */
    int output_fd;
    /* > 0: the same for stderr (res->err then stays empty): an interactive client reads both
     * streams as they are written. */
    int error_fd;
    /* /box shows the box's contents through a throw-away layer: the run reads what earlier
     * runs left there, and nothing it writes outlives it (a test of a judged submission). */
    bool fresh_box;
    const struct psc_file *files; /* fresh_box only: extra read-only files in this run's /box */
    size_t n_files;
    struct ps_limits limits;
    bool mount_nix;         /* a Nix runtime: /nix read-only */
    const char *request_id; /* NULL or a valid request id, for the helper's log */
};

/* Runs one stage. Returns 0 with res filled (res may be SBX_XX when the sandbox failed); -1 when
 * the request itself failed or was aborted (*aborted then says so).
 *
 * Descriptors: psc_run takes ownership of every descriptor in *run (input_fd, output_fd,
 * error_fd and each files[i].fd > 0) from the call on, whatever it returns: it closes them as soon
 * as the request is sent to the helper (or is refused before), long before the run ends. The caller
 * must not close or use them after the call; it keeps a dup if it needs one. This is what an
 * interactive pair needs: two concurrent psc_run calls (two threads, two boxes), the
 * program's (input_fd = pipe B's read end, output_fd = pipe A's write end) and the
 * interactor's (input_fd = pipe A's read end, output_fd = pipe B's write end). Once both are
 * sent, the only holders of each end are its run's box and helper, which close theirs when that
 * run ends: when either side exits, the other reads end of file or gets EPIPE at once instead
 * of waiting for its wall-time limit. A caller that creates the pipes must create them
 * O_CLOEXEC and must close nothing itself: passing all four ends to the two calls is enough. */
int psc_run(struct psc *c, uint32_t box, const struct psc_run *run, psc_abort_fn abort_fn,
            void *abort_ctx, struct sbx_result *res, bool *aborted, struct ev_err *err);

/* The outcome of a Nix operation in the helper (PS_NIX_*): malloc'ed, NUL-terminated. */
struct psc_nix_result {
    int exit_code; /* -1 when killed */
    bool timed_out;
    char *out, *err, *env;
    size_t out_len, err_len, env_len;
};
void psc_nix_result_free(struct psc_nix_result *r);

/* type: PS_NIX_INSTALL (runtime: the prepared directory), PS_NIX_UPDATE or PS_NIX_GC
 * (runtime NULL). 0 with res filled, whatever the command's outcome; -1 when the request
 * failed. */
int psc_nix(struct psc *c, enum ps_type type, const char *runtime, unsigned timeout_s,
            psc_abort_fn abort_fn, void *abort_ctx, struct psc_nix_result *res, struct ev_err *err);

#endif
