/* The sandbox: runs one command in a fresh, limited, isolated box and measures it.
 *
 * This is the whole interface of the layer. It knows nothing of HTTP, JSON or runtimes: a plain
 * struct describing one run goes in, a plain struct of metrics comes out.
 *
 *   struct sbx_host host;      sbx_host_init(&host, NULL, &err);      once per process
 *   struct sbx_box box;        sbx_box_open(&host, &box_opts, &box, &err);
 *   struct sbx_result res;     sbx_run(&host, &box, &run, &res, &err);  any number of times
 *   sbx_result_free(&res);     sbx_box_close(&host, &box);
 *
 * A box is a uid/gid pair from a reserved range plus a working directory; it is held (through
 * a lock file) by one owner at a time, so two live boxes never share a uid. Every run is a new
 * set of namespaces and a new cgroup; only the box directory carries over between runs. */
#ifndef ENVICUTOR_SANDBOX_H
#define ENVICUTOR_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "sandbox/cgroup.h"
#include "sandbox/netns.h"
#include "sandbox/result.h" /* struct sbx_result, what sbx_run fills */

#define SBX_MAX_ETC 96
#define SBX_MAX_MOUNTS 16
#define SBX_MAX_FILES 8

struct sbx_host_config {
    const char *run_dir; /* box directories, the root staging point */
    /* Box ownership locks. Global to the host by default (/run/envicutor/locks), whatever
     * run_dir is: box N is uid first_uid + N and cgroup box-N for every owner, so two owners
     * must never hold the same N, even with different run directories. */
    const char *lock_dir;
    uid_t first_uid; /* box N runs as first_uid + N, gid likewise */
    unsigned n_boxes;
    const char *cgroup_root; /* for tests: a fake cgroup v2 tree; NULL = detect */
    /* Network namespaces a thread keeps made ahead of the runs (see sandbox/netns.h); 0: each
     * run makes its own when it starts. */
    unsigned netns_ahead;
    /* Prepared roots (see sandbox/roots.h): each box's read-only tree built once and copied
     * for each of its runs. Extra mounts of a run must target one of these points for its run
     * to use it (NULL-terminated; the list may be empty). NULL: every run builds its tree. */
    const char *const *prepared_root_points;
    /* Where the /etc entries a box sees come from; NULL: /etc. Tests point it at a directory
     * they control, to change an entry by rename as ldconfig and tzdata do. */
    const char *etc_dir;
    /* Failures that do not stop a call (a box passed over, a box directory left behind on
     * close, the namespaces made ahead given up): the sandbox reports them here and never
     * prints. NULL: they are not reported. */
    ev_log_fn *log;
    void *log_ctx;
};

/* What sbx_host_init learns once about the host. */
struct sbx_host {
    char run_dir[256];
    char root_dir[300]; /* run_dir/root: mount point of each run's new root */
    char lock_dir[256];
    char etc_dir[201];
    /* run_dir/empty: an empty directory, the second lower layer of the read-only overlays
     * over the shared trees (overlayfs without an upper layer wants two lower ones) */
    char empty_dir[300];
    uid_t first_uid;
    unsigned n_boxes;
    struct cg_host cg;
    /* The seccomp program, compiled once in the parent: a child of a multi-threaded server may
     * not allocate memory, so it only installs this ready BPF. */
    void *bpf;
    unsigned short bpf_len;
    /* /etc entries that programs need, found once on the host (SPEC §2: never secrets). */
    char etc_names[SBX_MAX_ETC][64];
    unsigned char etc_types[SBX_MAX_ETC]; /* DT_DIR, DT_REG or DT_LNK */
    char etc_links[SBX_MAX_ETC][128];     /* target of DT_LNK entries */
    unsigned n_etc;
    /* How the host lays out /bin, /lib, ...: a link (Debian's merged /usr) or a directory. */
    char top_names[8][16];
    char top_links[8][64]; /* empty: a directory to bind */
    unsigned n_top;
    bool have_mount_setattr;      /* Linux >= 5.12: the root tree made read-only in one call */
    struct netns_pool *netns;     /* NULL: none made ahead */
    struct prepared_roots *roots; /* NULL: each run builds its tree */
    /* Box search (sbx_box_open, from any thread; accessed atomically): where the next search
     * starts, the boxes whose leftovers could not be cleaned (one byte per box; tried again
     * only when no other box is free), and how many times a box was skipped for that. */
    unsigned next_box;
    unsigned char *box_bad;
    unsigned long boxes_skipped;
    ev_log_fn *log; /* from sbx_host_config; NULL: not reported */
    void *log_ctx;
};

struct sbx_box_options {
    /* NULL: the box directory is a fresh tmpfs of disk_kb and max_inodes, removed on close.
     * Otherwise an existing directory that becomes /box (its size is then the caller's
     * business; it is chowned to the box user). */
    const char *external_dir;
    uint64_t disk_kb;
    uint64_t max_inodes;
};

struct sbx_box {
    int id;
    uid_t uid;
    gid_t gid;
    int lock_fd;
    bool own_tmpfs;
    uint64_t disk_kb, max_inodes; /* of its tmpfs, or of a fresh run's layer (external dir) */
    char dir[320];                /* host path of the directory that becomes /box */
};

struct sbx_limits {
    uint64_t wall_time_us;  /* elapsed time from execve */
    uint64_t cpu_time_us;   /* all processes and threads (cgroup) */
    uint64_t extra_time_us; /* grace on cpu_time before the kill */
    uint64_t memory_kb;     /* whole run, no swap */
    uint64_t max_open_files;
    uint64_t max_file_size_kb;
    uint64_t max_processes;    /* processes and threads alive at once */
    uint64_t stack_kb;         /* 0: same as memory_kb */
    uint64_t max_output_bytes; /* per stream; the rest is read and dropped */
    uint64_t tmp_kb;           /* size of the private /tmp */
};

struct sbx_mount {
    const char *source; /* host path */
    const char *target; /* absolute path inside the box, outside /usr, /etc, /box, ... */
    /* When dev or ino is not 0: the directory the caller checked. The bind fails unless the
     * source mounted is that very inode, so a path that someone else can change between the
     * caller's check and the mount (a link swapped in) cannot redirect it. */
    dev_t dev;
    ino_t ino;
};

/* A file that appears in the /box of a fresh-box run: a copy, made by the box's init, of the
 * regular file open for reading at fd (read from its start with pread, whatever its offset),
 * owned by root and read-only, so the program reads it and cannot change it. */
struct sbx_file {
    const char *name; /* a plain file name */
    int fd;
};

/* What a run reads of it (strings, arrays, mounts, files) must stay unchanged until sbx_run
 * returns: the box's init shares the caller's memory and reads it while the caller watches. */
struct sbx_run_config {
    char *const *argv;      /* argv[0] is searched in the PATH of envp when it has no '/' */
    char *const *envp;      /* exactly the environment of the program */
    const char *stdin_path; /* host path read as the program's stdin; NULL = /dev/null */
    int stdin_fd;           /* or a readable descriptor, used as it is; 0 = none */
    /* > 0: the program's stdout is this descriptor (e.g. a pipe to another run) and is not
     * read: res->out stays empty and on_output sees stream 2 only. The sandbox keeps its copy
     * of it only until the box's init is started. */
    int stdout_fd;
    /* > 0: the same for stderr (res->err stays empty; on_output sees stream 1 only). */
    int stderr_fd;
    /* Optional: a pipe whose bytes are signal numbers (SIGKILL, SIGTERM, SIGINT) to send to
     * the program while it runs, e.g. from an interactive client. 0 means none. */
    int signal_fd;
    /* /box shows the box directory through a throw-away layer: an overlay whose lower layer
     * is the box directory and whose upper layer is a tmpfs of the box's size made in the
     * run's own mount namespace. The run reads and runs what earlier runs left and may write
     * anywhere in /box, but nothing it writes, changes or deletes outlives it. */
    bool fresh_box;
    const struct sbx_file *files; /* fresh_box only: files added to this run's /box */
    size_t n_files;
    const char *workdir;            /* inside the box; NULL = /box */
    const struct sbx_mount *mounts; /* extra read-only bind mounts */
    size_t n_mounts;
    struct sbx_limits limits;
    /* Optional: a descriptor (an eventfd, a pipe) that becomes readable when the run must stop
     * at once, e.g. because the client that asked for it went away. 0, the zero value, means
     * none; fd 0 is stdin and never a cancel descriptor. A cancelled run is killed and cleaned
     * like any other and sbx_run returns -1 with "the run was cancelled". */
    int cancel_fd;
    /* Optional: takes each chunk of the program's output as it is read, stream 1 for stdout
     * and 2 for stderr (e.g. to stream it to a client). It sees every byte, whatever
     * max_output_bytes says, and res->out and res->err stay empty. Returns 0, or -1 when it
     * could not take a chunk: the run goes on (its output is still read, so that the program
     * never blocks on a full pipe) and sbx_run then fails. It is called from the thread
     * running sbx_run. NULL: the output is kept in res->out and res->err up to
     * max_output_bytes per stream. */
    int (*on_output)(void *ctx, int stream, const char *buf, size_t n);
    void *output_ctx;
};

/* The defaults of SPEC §4 for the run stage. */
void sbx_limits_default(struct sbx_limits *l);

int sbx_host_init(struct sbx_host *host, const struct sbx_host_config *cfg, struct ev_err *err);
void sbx_host_free(struct sbx_host *host);

int sbx_box_open(struct sbx_host *host, const struct sbx_box_options *opt, struct sbx_box *box,
                 struct ev_err *err);
void sbx_box_close(struct sbx_host *host, struct sbx_box *box);
/* How many times sbx_box_open found a free box whose leftovers could not be cleaned, and
 * passed over it (each is reported through sbx_host_config.log with the reason). */
unsigned long sbx_boxes_skipped(const struct sbx_host *host);

/* Removes what killed owners left behind: boxes whose lock is free (their cgroups, mounts and
 * directories). Returns the number of boxes checked. */
int sbx_cleanup_stale(struct sbx_host *host, struct ev_err *err);

/* At shutdown, after the owner's boxes are closed: removes box cgroups nobody holds and our
 * cgroup subtree when it is empty (other owners' live boxes are left alone). */
int sbx_host_cleanup(struct sbx_host *host, struct ev_err *err);

/* Runs one command. Returns 0 when the sandbox did its job, whatever the program did (the
 * verdict is in res); -1 with err when the sandbox itself failed, in which case res->status
 * is SBX_XX and res->message says why. */
int sbx_run(struct sbx_host *host, struct sbx_box *box, const struct sbx_run_config *cfg,
            struct sbx_result *res, struct ev_err *err);

#endif
