/* cgroup v1 and v2 behind one interface.
 *
 * The mode is chosen once, per resource, when the host is detected: memory and pids come from
 * the v2 hierarchy when its controllers are available to us, else from their v1 hierarchies;
 * CPU time comes from v2's cpu.stat (present in every v2 cgroup, with or without the cpu
 * controller) or v1's cpuacct. On a v1 "hybrid" host, runs are still placed in a
 * controller-less v2 cgroup when one is mounted, for cgroup.kill and cpu.stat.
 *
 * Each run gets a fresh cgroup per hierarchy, so peaks, OOM counters and CPU usage never carry
 * over from one run to the next. */
#ifndef ENVICUTOR_CGROUP_H
#define ENVICUTOR_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

enum cg_mode { CG_NONE = 0, CG_V1, CG_V2 };

/* The v2 controllers we enable in our subtree, indexing cg_v2_controllers. cpu is optional:
 * usage_usec is in every cgroup's cpu.stat; the controller adds fair weights between boxes. */
enum { CG_V2_MEMORY, CG_V2_PIDS, CG_V2_CPU, CG_V2_NCTL };
extern const char *const cg_v2_controllers[CG_V2_NCTL];

/* Where this process moves when the cgroup it was started in must hand controllers down
 * ("no internal processes"); our runs live in the sibling subtree "envicutor". */
#define CG_V2_SERVER_LEAF "envicutor-server"

struct cg_host {
    enum cg_mode memory, pids, cpu;
    bool v2;           /* runs get a v2 cgroup (membership, kill, cpu.stat) */
    bool v2_kill;      /* cgroup.kill exists (Linux >= 5.14) */
    bool v2_peak;      /* memory.peak exists (Linux >= 5.19) */
    bool v2_cpu_ctl;   /* the cpu controller is enabled for our runs */
    bool v1_memsw;     /* v1 swap accounting: memory.memsw.* exist */
    char v2_base[512]; /* our subtree in the v2 hierarchy */
    char v2_note[300]; /* why v2 controllers could not be delegated, when they could not */
    char v1_memory[512], v1_pids[512], v1_cpuacct[512]; /* our subtrees in v1 hierarchies */
};

struct cg_limits {
    uint64_t memory_bytes;
    uint64_t pids;
};

struct cg_run {
    char name[32];
    int v2_fd;                   /* directory of the run's v2 cgroup, or -1 */
    int mem_fd, pids_fd, cpu_fd; /* directories of its v1 cgroups, or -1 */
    /* cgroup.procs files of the v1 hierarchies, which the child writes "0" into to join. */
    int join_fds[4];
    int n_join;
    int v2_procs_fd; /* cgroup.procs of the v2 cgroup, for kernels without CLONE_INTO_CGROUP */
    uint64_t peak_sampled; /* fallback peak, from memory.current, for kernels < 5.19 */
};

/* Detects the layout from /proc/self/mountinfo and /proc/self/cgroup and prepares our
 * subtrees ("envicutor" under the cgroup this process was started in; see cg_v2_setup). */
int cg_host_detect(struct cg_host *h, struct ev_err *err);
const char *cg_mode_name(enum cg_mode m);
/* A one-line summary: "memory=v2 pids=v2 cpu=v2 kill=cgroup.kill peak=memory.peak
 * subtree=/sys/fs/cgroup/envicutor". */
void cg_host_describe(const struct cg_host *h, char *buf, size_t size);

/* Delegation in the v2 hierarchy, from self_dir (the cgroup this process is in; self_is_root
 * when it is the root of our cgroup namespace). Enables memory, pids and cpu — those that
 * self_dir's cgroup.controllers offers — in self_dir's subtree_control, moving this process
 * into self_dir/CG_V2_SERVER_LEAF first when the "no internal processes" rule requires it and
 * no other process shares the cgroup; when others do, the subtree goes next to self_dir, under
 * its parent, which already hands those controllers down. Then creates the subtree
 * "envicutor", enables in it what it received, and fills h's v2 fields and the v2 modes. */
int cg_v2_setup(struct cg_host *h, const char *self_dir, bool self_is_root, struct ev_err *err);

/* Shutdown: removes the run cgroups of our subtrees whose box no live owner holds (box-N is
 * held through an flock on lock_dir/N, as the box layer does), killing what is left in them,
 * then each subtree when it is empty. Boxes of other live processes, and the subtree they are
 * in, stay. Returns the number of run cgroups removed. */
int cg_host_cleanup(const struct cg_host *h, const char *lock_dir, struct ev_err *err);

/* How often a watcher should call cg_run_sample_memory (microseconds); 0 when the kernel
 * keeps the peak itself. */
uint64_t cg_sample_interval_us(const struct cg_host *h);

int cg_run_create(const struct cg_host *h, const char *name, const struct cg_limits *l,
                  struct cg_run *r, struct ev_err *err);
int cg_run_cpu_usec(const struct cg_host *h, struct cg_run *r, uint64_t *usec, struct ev_err *err);
/* Samples memory.current for hosts without memory.peak; cheap no-op elsewhere. */
void cg_run_sample_memory(const struct cg_host *h, struct cg_run *r);
int cg_run_memory(const struct cg_host *h, struct cg_run *r, uint64_t *peak_bytes, bool *oom_killed,
                  struct ev_err *err);
/* Kills every process of the run (cgroup.kill on v2; else the caller kills the box's PID 1,
 * which takes its whole PID namespace down). */
void cg_run_kill(const struct cg_host *h, struct cg_run *r);
/* Sends sig to every process of the run but except (the box's init, which must outlive its
 * program to report how it ended). Returns how many were signalled. */
int cg_run_signal(const struct cg_run *r, int sig, pid_t except);
/* Removes the run's cgroups and closes its descriptors. Waits briefly for dying tasks. */
int cg_run_destroy(const struct cg_host *h, struct cg_run *r, struct ev_err *err);
/* Removes a leftover cgroup called name (after a crash), killing what is still in it. */
int cg_remove_stale(const struct cg_host *h, const char *name, struct ev_err *err);
/* The names of our cgroups (in any hierarchy, each once) that start with prefix; at most max. */
int cg_list(const struct cg_host *h, const char *prefix, char (*names)[64], int max);

/* The v2 file protocol, on a cgroup directory descriptor (tested against a fake tree). */
int cg_v2_set_limits(int dirfd, const struct cg_limits *l, bool memory, bool pids,
                     struct ev_err *err);
int cg_v2_read_cpu_usec(int dirfd, uint64_t *usec, struct ev_err *err);
int cg_v2_read_memory(int dirfd, bool have_peak, uint64_t sampled, uint64_t *peak, bool *oom,
                      struct ev_err *err);
/* Enables controllers ("+memory +pids") in dir's subtree; at a non-root cgroup that holds
 * processes (the "no internal processes" rule, EBUSY) it first moves this process into the
 * leaf `leaf` (cg_v2_move_to_leaf). An empty list is a no-op. */
int cg_v2_delegate(int dirfd, const char *controllers, const char *leaf, struct ev_err *err);
/* Moves this process into dir/leaf (created if needed) when it is the only process of dir's
 * cgroup; fails with EBUSY, moving nothing, when other processes share it. */
int cg_v2_move_to_leaf(int dirfd, const char *leaf, struct ev_err *err);

#endif
