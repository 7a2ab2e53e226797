/* The message format between the unprivileged server and its privileged helper.
 *
 * The server (HTTP, JSON, SQLite) runs as an unprivileged user; only the helper keeps root,
 * because only building sandboxes needs it. They talk over a SOCK_SEQPACKET socket pair: one
 * datagram per message, so a message is never split or merged. A request is a fixed header,
 * a fixed body for its type and, for PS_RUN, a block of NUL-terminated strings. Large data
 * (a source file, the input, the program's output) never travels in a message: it is a memfd
 * passed with SCM_RIGHTS, so the messages stay small and of bounded size.
 *
 * The helper trusts nothing in a request: ps_check_request() validates lengths, counts, NUL
 * termination, names and limit ranges before anything is done. */
#ifndef ENVICUTOR_PROTOCOL_H
#define ENVICUTOR_PROTOCOL_H

#include <stddef.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "common/filename.h"

#define PS_MAGIC 0x45564335u /* "EVC5": bumped with any change of layout */
#define PS_MAX_MSG 65536
#define PS_MAX_ARGS 64
#define PS_MAX_ENV 256
#define PS_NAME_MAX FILE_NAME_MAX /* a file name in the box */
#define PS_RUNTIME_MAX 64
#define PS_MAX_FILES 8 /* extra files of a fresh-box run */
/* The most descriptors one message carries: a run's stdin, stdout and stderr, then its files. */
#define PS_MAX_FDS (3 + PS_MAX_FILES)
#define PS_REQUEST_ID_SIZE 72 /* REQUEST_ID_MAX + 1, rounded up to keep the struct unpadded */

/* The "box" of a PS_CANCEL that kills the Nix command running now. */
#define PS_NIX_BOX UINT32_MAX

/* The seals that make a run's stdin memfd immutable: the helper passes such a memfd to the box
 * as it is, and copies anything else. */
#define PS_STDIN_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)

/* Nix as both sides see it. The server asks whether Nix is there (nix_available) where the
 * helper looks for its commands: in Nix's own profiles first, then in PATH. */
#define PS_NIX_PROFILE_BINS "/nix/var/nix/profiles/default/bin:/run/current-system/sw/bin"

/* The bash nix-shell starts, and the one Nix runtimes' scripts run with. Without nixpkgs,
 * nix-shell cannot find bashInteractive and falls back on the bash in PATH; with nixpkgs it
 * would fetch one. Either way the runs must have the same bash inside their boxes, so it is
 * fixed: the host's /bin/bash, which every box has (the host's /usr is mounted read-only in
 * each box), set through NIX_BUILD_SHELL. nix-shell puts its directory first in the PATH it
 * exports, which the server takes out again for runs (pipeline.c). */
#define PS_NIX_SHELL_DIR "/bin"
#define PS_NIX_SHELL_BASH PS_NIX_SHELL_DIR "/bash"

enum ps_type {
    PS_OPEN_BOX = 1, /* -> box handle */
    PS_WRITE_FILE,   /* fd: contents; creates box/name (never follows or replaces) */
    PS_RUN,          /* fds, in this order: stdin (has_stdin), stdout (PS_RUN_STDOUT_FD),
                      * stderr (PS_RUN_STDERR_FD), one per file; reply fd: stdout and stderr
                      * (those that did not go to a descriptor) */
    PS_CANCEL,       /* kills the box's current and future runs (PS_NIX_BOX: the Nix
                      * command running now); no reply */
    PS_CLOSE_BOX,
    PS_NIX_INSTALL, /* nix-shell once on runtimes/NAME/shell.nix; reply fd: stdout, stderr,
                       then the environment (NUL-separated) */
    PS_NIX_UPDATE,  /* nix-channel --update, nix-env -u; reply fd: stdout, stderr */
    PS_NIX_GC,      /* nix-store --gc; reply fd: stdout, stderr */
    PS_SIGNAL,      /* sends a signal to the program of the box's current run; no reply */
    PS_TYPE_END,
};

struct ps_header {
    uint32_t magic;
    uint32_t type;
    uint64_t req_id; /* echoed in the reply */
    uint32_t box;    /* box handle, for everything but PS_OPEN_BOX */
    uint32_t pad;
};

struct ps_open_box {
    uint64_t disk_kb;
    uint64_t max_inodes;
};

struct ps_write_file {
    char name[PS_NAME_MAX + 1];
    uint32_t mode;
    uint32_t pad;
};

struct ps_limits {
    uint64_t wall_time_us, cpu_time_us, extra_time_us, memory_kb;
    uint64_t max_open_files, max_file_size_kb, max_processes, max_output_bytes, tmp_kb;
};

struct ps_run {
    struct ps_limits limits;
    char runtime[PS_RUNTIME_MAX]; /* directory under the runtime store, mounted at /runtime;
                                     empty: none */
    uint32_t argc, envc;
    uint32_t strings_len; /* bytes of strings following this struct */
    uint32_t has_stdin;   /* an fd comes with the message */
    uint32_t flags;       /* PS_RUN_* */
    uint32_t n_files;     /* PS_RUN_FRESH_BOX only: files[0..n_files), one fd each */
    char files[PS_MAX_FILES][PS_NAME_MAX + 1]; /* plain names of the files in /box */
    /* The HTTP request this run is for, for the helper's log lines about it: empty, or a valid
     * request id (common/request_id.h), NUL-terminated. */
    char request_id[PS_REQUEST_ID_SIZE];
};

#define PS_RUN_MOUNT_NIX 1u /* mount /nix read-only (Nix runtimes) */
#define PS_RUN_STDOUT_FD 2u /* stdout is the descriptor that comes after stdin's: a pipe */
#define PS_RUN_FRESH_BOX 4u /* /box through a throw-away layer (sandbox.h, fresh_box) */
#define PS_RUN_STDERR_FD 8u /* stderr is the descriptor after stdout's (or stdin's): a pipe */
#define PS_RUN_FLAGS (PS_RUN_MOUNT_NIX | PS_RUN_STDOUT_FD | PS_RUN_FRESH_BOX | PS_RUN_STDERR_FD)

/* PS_SIGNAL: SIGKILL, SIGTERM or SIGINT. */
struct ps_signal {
    uint32_t signal;
    uint32_t pad;
};

/* The Nix operations run as root on the host, bounded by timeout_s. */
struct ps_nix {
    char runtime[PS_RUNTIME_MAX]; /* PS_NIX_INSTALL: the prepared runtime's directory */
    uint32_t timeout_s;
    uint32_t pad;
};

struct ps_request {
    struct ps_header h;
    union {
        struct ps_open_box open;
        struct ps_write_file write;
        struct ps_run run;
        struct ps_nix nix;
        struct ps_signal sig;
    } u;
    /* PS_RUN: argc then envc NUL-terminated strings */
};

struct ps_result {
    int32_t status; /* enum sbx_status */
    int32_t exit_code, exit_signal;
    uint32_t flags; /* PS_F_* */
    uint64_t cpu_time_us, wall_time_us, memory_kb;
    uint64_t out_len, err_len; /* bytes of the reply's memfd: stdout then stderr */
    uint64_t env_len;          /* PS_NIX_INSTALL: then the environment */
    char message[256];
};

#define PS_F_MEMORY 1u
#define PS_F_CPU 2u
#define PS_F_WALL 4u
#define PS_F_OUT_TRUNC 8u
#define PS_F_ERR_TRUNC 16u
#define PS_F_TIMED_OUT 32u /* a Nix operation was killed at its timeout */

struct ps_reply {
    uint32_t magic;
    uint32_t type;
    uint64_t req_id;
    int32_t rc; /* 0, or -1 with msg */
    uint32_t box;
    struct ps_result res; /* PS_RUN when rc == 0 and, for a sandbox failure, rc == 0 too with
                             status SBX_XX */
    char msg[512];
};

/* Highest values a request may carry: far above any configuration, far below overflow. */
#define PS_MAX_SECONDS_US (86400ull * 1000000ull)
#define PS_MAX_KB (1ull << 32)
#define PS_MAX_COUNT (1ull << 20)
#define PS_MAX_NIX_TIMEOUT 86400u
#define PS_MAX_INPUT (1ull << 32) /* a run's stdin: the largest MAX_REQUEST_SIZE */

/* Validates a request of n bytes that came with fd_count descriptors. On success the strings
 * of a PS_RUN are split into argv/envp (pointers into req, NULL-terminated arrays of at least
 * PS_MAX_ARGS + 1 and PS_MAX_ENV + 1 entries). */
int ps_check_request(const struct ps_request *req, size_t n, int fd_count, char **argv, char **envp,
                     struct ev_err *err);

/* The number of descriptors a valid PS_RUN request comes with. */
int ps_run_fd_count(const struct ps_run *r);

/* Sends one datagram of len bytes with the n_fds descriptors of fds (at most PS_MAX_FDS)
 * attached (SCM_RIGHTS), retrying on EINTR; returns what sendmsg returned. Callers that share
 * the socket serialise calls. */
ssize_t ps_send(int sock, const void *msg, size_t len, const int *fds, int n_fds);

#endif
