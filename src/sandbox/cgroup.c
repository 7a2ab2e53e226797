#include "sandbox/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"

#define SUBTREE "envicutor"
/* Kernels before 5.19 have no memory.peak; memory.current is sampled this often instead. */
#define SAMPLE_US 5000

const char *const cg_v2_controllers[CG_V2_NCTL] = {"memory", "pids", "cpu"};

const char *cg_mode_name(enum cg_mode m)
{
    return m == CG_V2 ? "v2" : m == CG_V1 ? "v1" : "none";
}

void cg_host_describe(const struct cg_host *h, char *buf, size_t size)
{
    const char *peak = h->memory == CG_V1   ? "max_usage_in_bytes"
                       : h->v2_peak         ? "memory.peak"
                       : h->memory == CG_V2 ? "sampled"
                                            : "none";
    snprintf(buf, size, "memory=%s pids=%s cpu=%s kill=%s peak=%s subtree=%s",
             cg_mode_name(h->memory), cg_mode_name(h->pids), cg_mode_name(h->cpu),
             h->v2_kill ? "cgroup.kill" : "pid-namespace", peak, h->v2 ? h->v2_base : h->v1_memory);
}

/* ---- detection ------------------------------------------------------------------------- */

struct hier {
    char mountpoint[256];
    char root[256];
    char self[256]; /* our cgroup path, from /proc/self/cgroup */
};

static bool has_option(const char *opts, const char *want)
{
    size_t n = strlen(want);
    for (const char *p = opts; p && *p;) {
        if (strncmp(p, want, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return false;
}

/* /proc/self/mountinfo and /proc/self/cgroup, read once for all the controllers looked for
 * (the kernel writes the mount table out afresh for each read). */
struct proc_text {
    char *mountinfo, *cgroup;
};

/* Far above any real mount table; only a bound on what a broken /proc could make us read. */
#define PROC_TEXT_MAX (256u << 20)

static int read_proc_text(const char *path, char **text, struct ev_err *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, errno, "open %s", path);
    size_t len;
    return read_whole_fd(fd, PROC_TEXT_MAX, path, text, &len, err);
}

static FILE *open_text(const char *text)
{
    return text ? fmemopen((void *)text, strlen(text), "r") : NULL;
}

/* Finds the mount of the v1 hierarchy holding `controller`, or the v2 one when controller is
 * NULL. */
static bool find_mount(const struct proc_text *pt, const char *controller, struct hier *out)
{
    cleanup_fclose FILE *f = open_text(pt->mountinfo);
    if (!f)
        return false;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        char root[256], mnt[256], fstype[64], superopts[512];
        char *dash = strstr(line, " - ");
        if (!dash)
            continue;
        if (sscanf(line, "%*s %*s %*s %255s %255s", root, mnt) != 2)
            continue;
        if (sscanf(dash + 3, "%63s %*s %511s", fstype, superopts) != 2)
            continue;
        if (controller ? strcmp(fstype, "cgroup") == 0 && has_option(superopts, controller)
                       : strcmp(fstype, "cgroup2") == 0) {
            snprintf(out->mountpoint, sizeof(out->mountpoint), "%s", mnt);
            snprintf(out->root, sizeof(out->root), "%s", root);
            return true;
        }
    }
    return false;
}

/* Our own cgroup in the hierarchy of `controller` (NULL: the v2 "0::" line). */
static bool find_self(const struct proc_text *pt, const char *controller, struct hier *out)
{
    cleanup_fclose FILE *f = open_text(pt->cgroup);
    if (!f)
        return false;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *list = c1 + 1;
        bool match = controller ? has_option(list, controller) : (*list == '\0' && line[0] == '0');
        if (match) {
            snprintf(out->self, sizeof(out->self), "%s", c2 + 1);
            return true;
        }
    }
    return false;
}

/* mountpoint + (self relative to the mount's root) */
static void hier_path(const struct hier *h, const char *suffix, char *out, size_t size)
{
    const char *rel = h->self;
    size_t rl = strlen(h->root);
    if (strcmp(h->root, "/") != 0 && strncmp(rel, h->root, rl) == 0)
        rel += rl;
    if (strcmp(rel, "/") == 0)
        rel = "";
    snprintf(out, size, "%s%s%s%s", h->mountpoint, rel, suffix ? "/" : "", suffix ? suffix : "");
}

static bool file_exists(const char *dir, const char *name)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static int detect_v1(const struct proc_text *pt, const char *controller, char *base, size_t size,
                     struct ev_err *err)
{
    struct hier h;
    if (!find_mount(pt, controller, &h) || !find_self(pt, controller, &h))
        return 0;
    hier_path(&h, SUBTREE, base, size);
    /* there already but at a first start: one mkdir then, rather than one per component */
    if (mkdir(base, 0755) < 0 && errno != EEXIST && make_dirs(base, 1, 0755, err) < 0)
        return -1;
    return 1;
}

/* Parses a space-separated controller list ("cpuset cpu io memory pids") into the controllers
 * we use. */
static void v2_parse_controllers(const char *list, bool have[CG_V2_NCTL])
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", list);
    for (int i = 0; i < CG_V2_NCTL; i++)
        have[i] = false;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
        for (int i = 0; i < CG_V2_NCTL; i++)
            if (strcmp(tok, cg_v2_controllers[i]) == 0)
                have[i] = true;
}

static int v2_read_controllers(int dirfd, bool have[CG_V2_NCTL], struct ev_err *err)
{
    char buf[512];
    if (read_file_at(dirfd, "cgroup.controllers", buf, sizeof(buf), err) < 0)
        return -1;
    v2_parse_controllers(buf, have);
    return 0;
}

/* "+memory +pids +cpu" for the controllers set in `on`; empty when none is. */
static void v2_enable_string(const bool on[CG_V2_NCTL], char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < CG_V2_NCTL; i++)
        if (on[i] && n < size)
            n += (size_t)snprintf(buf + n, size - n, "%s+%s", n ? " " : "", cg_v2_controllers[i]);
}

/* True when no process but this one is in the cgroup of dirfd. */
static int v2_only_us(int dirfd, bool *alone, struct ev_err *err)
{
    char buf[4096];
    ssize_t n = read_file_at(dirfd, "cgroup.procs", buf, sizeof(buf), err);
    if (n < 0)
        return -1;
    *alone = true;
    pid_t self = getpid();
    char *save = NULL;
    for (char *tok = strtok_r(buf, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save))
        if (atoi(tok) != self)
            *alone = false;
    /* A list that filled the buffer has other processes in it anyway. */
    if ((size_t)n == sizeof(buf) - 1)
        *alone = false;
    return 0;
}

int cg_v2_move_to_leaf(int dirfd, const char *leaf, struct ev_err *err)
{
    bool alone;
    if (v2_only_us(dirfd, &alone, err) < 0)
        return -1;
    /* Moving only ourselves would not empty the cgroup; and the other processes (a login
     * shell, a supervisor) are not ours to move. */
    if (!alone)
        return ev_fail(err, EBUSY, "other processes share this cgroup");
    if (mkdirat(dirfd, leaf, 0755) < 0 && errno != EEXIST)
        return ev_fail(err, errno, "mkdir %s", leaf);
    cleanup_close int lfd = openat(dirfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (lfd < 0)
        return ev_fail(err, errno, "open %s", leaf);
    if (write_file_at(lfd, "cgroup.procs", "0", err) < 0)
        return ev_wrap(err, "moving this process into %s: ", leaf);
    return 0;
}

int cg_v2_delegate(int dirfd, const char *controllers, const char *leaf, struct ev_err *err)
{
    struct ev_err e;
    if (!controllers[0] || write_file_at(dirfd, "cgroup.subtree_control", controllers, &e) == 0)
        return 0;
    if (e.errnum != EBUSY) {
        *err = e;
        return -1;
    }
    /* "No internal processes": a non-root cgroup with processes cannot hand controllers to
     * its children. When the only process is this one, it moves into a leaf of its own. */
    if (cg_v2_move_to_leaf(dirfd, leaf, err) < 0)
        return -1;
    return write_file_at(dirfd, "cgroup.subtree_control", controllers, err);
}

static void parent_dir(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash && slash != path)
        *slash = '\0';
}

int cg_v2_setup(struct cg_host *h, const char *self_dir, bool self_is_root, struct ev_err *err)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", self_dir);
    /* Started again from the leaf an earlier start moved us into (an exec in place, or a
     * command started by the server): delegation happens one level up, as then. */
    const char *last = strrchr(dir, '/');
    if (!self_is_root && last && strcmp(last + 1, CG_V2_SERVER_LEAF) == 0)
        parent_dir(dir);

    cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return ev_fail(err, errno, "open %s", dir);
    bool want[CG_V2_NCTL];
    if (v2_read_controllers(dfd, want, err) < 0)
        return ev_wrap(err, "%s: ", dir);
    char ctl[64];
    v2_enable_string(want, ctl, sizeof(ctl));

    h->v2_note[0] = '\0';
    struct ev_err e;
    if (cg_v2_delegate(dfd, ctl, CG_V2_SERVER_LEAF, &e) < 0) {
        if (e.errnum != EBUSY) {
            *err = e;
            return ev_wrap(err, "cgroup v2 delegation at %s: ", dir);
        }
        if (self_is_root) {
            /* The root of a cgroup namespace that other processes share: nothing above it is
             * visible. Runs still get a v2 cgroup, without controllers. */
            snprintf(h->v2_note, sizeof(h->v2_note),
                     "cannot enable %s in %s: %s; start envicutor in a cgroup of its own", ctl, dir,
                     e.msg);
        } else {
            /* Other processes share our cgroup (the command run from a login shell, a service
             * that forks the server without exec). Our cgroup's parent already hands these
             * controllers down (that is what our cgroup.controllers lists), so the subtree
             * becomes a sibling of our cgroup instead of a child. */
            parent_dir(dir);
            close(dfd);
            dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd < 0)
                return ev_fail(err, errno, "open %s", dir);
        }
    }

    snprintf(h->v2_base, sizeof(h->v2_base), "%s/%s", strcmp(dir, "/") ? dir : "", SUBTREE);
    if (mkdirat(dfd, SUBTREE, 0755) < 0 && errno != EEXIST)
        return ev_fail(err, errno, "mkdir %s", h->v2_base);
    cleanup_close int bfd = openat(dfd, SUBTREE, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (bfd < 0)
        return ev_fail(err, errno, "open %s", h->v2_base);
    bool have[CG_V2_NCTL];
    if (v2_read_controllers(bfd, have, err) < 0)
        return ev_wrap(err, "%s: ", h->v2_base);
    v2_enable_string(have, ctl, sizeof(ctl));
    if (ctl[0] && write_file_at(bfd, "cgroup.subtree_control", ctl, err) < 0)
        return ev_wrap(err, "cgroup v2 delegation at %s: ", h->v2_base);

    h->v2 = true;
    h->cpu = CG_V2; /* cpu.stat's usage_usec is in every v2 cgroup, controller or not */
    if (have[CG_V2_MEMORY])
        h->memory = CG_V2;
    if (have[CG_V2_PIDS])
        h->pids = CG_V2;
    h->v2_cpu_ctl = have[CG_V2_CPU];
    h->v2_kill = file_exists(h->v2_base, "cgroup.kill");
    /* memory.peak exists in non-root cgroups only, so it is looked for in our subtree. */
    h->v2_peak = have[CG_V2_MEMORY] && file_exists(h->v2_base, "memory.peak");
    return 0;
}

static int detect(const struct proc_text *pt, struct cg_host *h, struct ev_err *err)
{
    struct hier v2;
    if (find_mount(pt, NULL, &v2) && find_self(pt, NULL, &v2)) {
        char self_dir[512];
        hier_path(&v2, NULL, self_dir, sizeof(self_dir));
        if (cg_v2_setup(h, self_dir, strcmp(v2.self, "/") == 0, err) < 0)
            return -1;
    }

    int r;
    if (h->memory == CG_NONE) {
        if ((r = detect_v1(pt, "memory", h->v1_memory, sizeof(h->v1_memory), err)) < 0)
            return -1;
        if (r) {
            h->memory = CG_V1;
            h->v1_memsw = file_exists(h->v1_memory, "memory.memsw.limit_in_bytes");
        }
    }
    if (h->pids == CG_NONE) {
        if ((r = detect_v1(pt, "pids", h->v1_pids, sizeof(h->v1_pids), err)) < 0)
            return -1;
        if (r)
            h->pids = CG_V1;
    }
    if (!h->v2) {
        if ((r = detect_v1(pt, "cpuacct", h->v1_cpuacct, sizeof(h->v1_cpuacct), err)) < 0)
            return -1;
        if (r)
            h->cpu = CG_V1;
    }
    const char *note = h->v2_note[0] ? h->v2_note : "no v2 controllers delegated to us";
    if (h->memory == CG_NONE)
        return ev_fail(err, 0,
                       "no memory cgroup controller: neither cgroup v2 (%s) nor a v1 memory "
                       "hierarchy",
                       note);
    if (h->pids == CG_NONE)
        return ev_fail(err, 0, "no pids cgroup controller: neither cgroup v2 (%s) nor v1", note);
    if (h->cpu == CG_NONE)
        return ev_fail(err, 0, "no CPU accounting: neither cgroup v2 nor v1 cpuacct is mounted");
    return 0;
}

int cg_host_detect(struct cg_host *h, struct ev_err *err)
{
    memset(h, 0, sizeof(*h));
    struct proc_text pt = {NULL, NULL};
    if (read_proc_text("/proc/self/mountinfo", &pt.mountinfo, err) < 0 ||
        read_proc_text("/proc/self/cgroup", &pt.cgroup, err) < 0) {
        free(pt.mountinfo);
        free(pt.cgroup);
        return -1;
    }
    int r = detect(&pt, h, err);
    free(pt.mountinfo);
    free(pt.cgroup);
    return r;
}

/* ---- the v2 file protocol ---------------------------------------------------------------- */

int cg_v2_set_limits(int dirfd, const struct cg_limits *l, bool memory, bool pids,
                     struct ev_err *err)
{
    char num[32];
    if (memory) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)l->memory_bytes);
        if (write_file_at(dirfd, "memory.max", num, err) < 0)
            return -1;
        /* No swap: a box over its memory is killed, not slowed down. The file is missing
         * when the kernel has no swap accounting, and then there is nothing to limit. */
        struct ev_err e;
        if (write_file_at(dirfd, "memory.swap.max", "0", &e) < 0 && e.errnum != ENOENT) {
            *err = e;
            return -1;
        }
    }
    if (pids) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)l->pids);
        if (write_file_at(dirfd, "pids.max", num, err) < 0)
            return -1;
    }
    return 0;
}

int cg_v2_read_cpu_usec(int dirfd, uint64_t *usec, struct ev_err *err)
{
    return read_keyed_u64_at(dirfd, "cpu.stat", "usage_usec", usec, err);
}

int cg_v2_read_memory(int dirfd, bool have_peak, uint64_t sampled, uint64_t *peak, bool *oom,
                      struct ev_err *err)
{
    uint64_t v = 0;
    if (have_peak) {
        if (read_u64_at(dirfd, "memory.peak", &v, err) < 0)
            return -1;
    } else {
        /* Kernels before 5.19 have no memory.peak: the best we have is the largest
         * memory.current seen while the run was monitored. */
        if (read_u64_at(dirfd, "memory.current", &v, err) < 0)
            return -1;
        if (sampled > v)
            v = sampled;
    }
    *peak = v;
    uint64_t kills = 0;
    if (read_keyed_u64_at(dirfd, "memory.events", "oom_kill", &kills, err) < 0)
        return -1;
    *oom = kills > 0;
    return 0;
}

/* ---- per run ------------------------------------------------------------------------------- */

static int remove_leftover(const char *base, const char *name, struct ev_err *err);

/* Opens base/name, creating name. Our subtree (base) may have been removed since detection:
 * another owner removes it at shutdown when it is empty (cg_host_cleanup), so it is made again,
 * with `controllers` enabled for its children on v2. */
static int open_dir(const char *base, const char *name, bool create, const char *controllers,
                    struct ev_err *err)
{
    cleanup_close int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0 && errno == ENOENT && create) {
        if (make_dir(base, 0755, err) < 0)
            return -1;
        bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (bfd >= 0 && controllers && controllers[0] &&
            write_file_at(bfd, "cgroup.subtree_control", controllers, err) < 0)
            return ev_wrap(err, "%s: ", base);
    }
    if (bfd < 0)
        return ev_fail(err, errno, "open %s", base);
    if (create && mkdirat(bfd, name, 0755) < 0) {
        /* Left by an earlier run of the same box whose teardown failed (its last tasks were
         * slow to die). The box is ours, its lock held: what is left in it is killed and the
         * cgroup made anew, so no count (peak, OOM kills, CPU) carries over into this run. */
        if (errno != EEXIST)
            return ev_fail(err, errno, "mkdir %s/%s", base, name);
        if (remove_leftover(base, name, err) < 0)
            return ev_wrap(err, "a cgroup left by an earlier run: ");
        if (mkdirat(bfd, name, 0755) < 0)
            return ev_fail(err, errno, "mkdir %s/%s", base, name);
    }
    int fd = openat(bfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, errno, "open %s/%s", base, name);
    return fd;
}

static int add_join(struct cg_run *r, int dirfd, struct ev_err *err)
{
    int fd = openat(dirfd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, errno, "open cgroup.procs of %s", r->name);
    r->join_fds[r->n_join++] = fd;
    return 0;
}

static void run_close(struct cg_run *r)
{
    int *fds[] = {&r->v2_fd, &r->mem_fd, &r->pids_fd, &r->cpu_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    for (int i = 0; i < r->n_join; i++)
        close(r->join_fds[i]);
    r->n_join = 0;
    if (r->v2_procs_fd >= 0)
        close(r->v2_procs_fd);
    r->v2_procs_fd = -1;
}

/* The run's cgroup in a v1 hierarchy, and its cgroup.procs for the box's init to join (the
 * limits are written before the init joins, whenever this is called). */
static int open_v1(struct cg_run *r, const char *base, const char *name, int *fd,
                   struct ev_err *err)
{
    if ((*fd = open_dir(base, name, true, NULL, err)) < 0)
        return -1;
    return add_join(r, *fd, err);
}

int cg_run_create(const struct cg_host *h, const char *name, const struct cg_limits *l,
                  struct cg_run *r, struct ev_err *err)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->v2_fd = r->mem_fd = r->pids_fd = r->cpu_fd = r->v2_procs_fd = -1;
    char num[32];

    if (h->v2) {
        char ctl[64];
        snprintf(ctl, sizeof(ctl), "%s%s%s", h->memory == CG_V2 ? "+memory " : "",
                 h->pids == CG_V2 ? "+pids " : "", h->v2_cpu_ctl ? "+cpu" : "");
        if ((r->v2_fd = open_dir(h->v2_base, name, true, ctl, err)) < 0)
            goto fail;
        r->v2_procs_fd = openat(r->v2_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        if (r->v2_procs_fd < 0) {
            ev_fail(err, errno, "open cgroup.procs");
            goto fail;
        }
        if (cg_v2_set_limits(r->v2_fd, l, h->memory == CG_V2, h->pids == CG_V2, err) < 0)
            goto fail;
    }
    if (h->memory == CG_V1) {
        if (open_v1(r, h->v1_memory, name, &r->mem_fd, err) < 0)
            goto fail;
        snprintf(num, sizeof(num), "%llu", (unsigned long long)l->memory_bytes);
        /* memsw (memory + swap) must not be below the memory limit, so memory goes first. */
        if (write_file_at(r->mem_fd, "memory.limit_in_bytes", num, err) < 0)
            goto fail;
        if (h->v1_memsw && write_file_at(r->mem_fd, "memory.memsw.limit_in_bytes", num, err) < 0)
            goto fail;
        if (!h->v1_memsw && write_file_at(r->mem_fd, "memory.swappiness", "0", err) < 0)
            goto fail;
    }
    if (h->pids == CG_V1) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)l->pids);
        if (open_v1(r, h->v1_pids, name, &r->pids_fd, err) < 0 ||
            write_file_at(r->pids_fd, "pids.max", num, err) < 0)
            goto fail;
    }
    if (h->cpu == CG_V1 && open_v1(r, h->v1_cpuacct, name, &r->cpu_fd, err) < 0)
        goto fail;
    return 0;
fail:
    ev_wrap(err, "cgroup %s: ", name);
    struct ev_err ignored; /* the failure to report is the one above */
    cg_run_destroy(h, r, &ignored);
    return -1;
}

int cg_run_cpu_usec(const struct cg_host *h, struct cg_run *r, uint64_t *usec, struct ev_err *err)
{
    if (h->cpu == CG_V2)
        return cg_v2_read_cpu_usec(r->v2_fd, usec, err);
    uint64_t ns;
    if (read_u64_at(r->cpu_fd, "cpuacct.usage", &ns, err) < 0)
        return -1;
    *usec = ns / 1000;
    return 0;
}

void cg_run_sample_memory(const struct cg_host *h, struct cg_run *r)
{
    if (h->memory != CG_V2 || h->v2_peak)
        return;
    uint64_t cur;
    struct ev_err ignored; /* a sample missed: the next one, or memory.peak, stands in */
    if (read_u64_at(r->v2_fd, "memory.current", &cur, &ignored) == 0 && cur > r->peak_sampled)
        r->peak_sampled = cur;
}

int cg_run_memory(const struct cg_host *h, struct cg_run *r, uint64_t *peak, bool *oom,
                  struct ev_err *err)
{
    if (h->memory == CG_V2)
        return cg_v2_read_memory(r->v2_fd, h->v2_peak, r->peak_sampled, peak, oom, err);
    if (read_u64_at(r->mem_fd, "memory.max_usage_in_bytes", peak, err) < 0)
        return -1;
    uint64_t kills = 0;
    if (read_keyed_u64_at(r->mem_fd, "memory.oom_control", "oom_kill", &kills, err) < 0)
        return -1;
    *oom = kills > 0;
    return 0;
}

void cg_run_kill(const struct cg_host *h, struct cg_run *r)
{
    struct ev_err ignored; /* the caller kills the box's init as well */
    if (h->v2_kill && r->v2_fd >= 0)
        write_file_at(r->v2_fd, "cgroup.kill", "1", &ignored);
}

/* Whether /proc/<pid>/cgroup puts pid in the cgroup at dir_path (its directory's absolute path):
 * a line's path is the cgroup's path under its hierarchy's root, so dir_path ends with it. */
static bool proc_in_cgroup(pid_t pid, const char *dir_path)
{
    char path[32], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    cleanup_close int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct ev_err ignored;
    ssize_t n = dir >= 0 ? read_file_at(dir, "cgroup", buf, sizeof(buf), &ignored) : -1;
    if (n <= 0)
        return false;
    size_t dl = strlen(dir_path);
    for (char *line = buf, *end; line && *line; line = end ? end + 1 : NULL) {
        end = strchr(line, '\n');
        if (end)
            *end = '\0';
        char *cg = strchr(line, ':');
        cg = cg ? strchr(cg + 1, ':') : NULL;
        if (!cg || cg[1] != '/' || strcmp(cg + 1, "/") == 0)
            continue;
        size_t cl = strlen(cg + 1);
        if (cl <= dl && strcmp(dir_path + dl - cl, cg + 1) == 0)
            return true;
    }
    return false;
}

int cg_run_signal(const struct cg_run *r, int sig, pid_t except)
{
    /* any hierarchy the run is in lists all of its processes */
    int dir = r->v2_fd >= 0 ? r->v2_fd : r->pids_fd >= 0 ? r->pids_fd : r->cpu_fd;
    if (dir < 0)
        return 0;
    int fd = openat(dir, "cgroup.procs", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    cleanup_fclose FILE *f = fdopen(fd, "re");
    if (!f) {
        close(fd);
        return 0;
    }
    char self[64], dir_path[PATH_MAX];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", dir);
    ssize_t dl = readlink(self, dir_path, sizeof(dir_path) - 1);
    if (dl <= 0)
        return 0;
    dir_path[dl] = '\0';
    /* A pid read from cgroup.procs may belong to another process by the time it is signalled
     * (the box's process ended and was reaped, and the number was given out again). So the
     * signal goes through a pidfd, which names one process for good: the process is checked to
     * be in the run's cgroup only after the pidfd pins it. If the pidfd's process ends between
     * the check and the signal, /proc/<pid> may show a newer process of that number, but the
     * signal still reaches only the pidfd's process, which is then gone (ESRCH) or a zombie. */
    int pid, n = 0;
    while (fscanf(f, "%d", &pid) == 1) {
        if (pid == except)
            continue;
        cleanup_close int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pfd < 0 || !proc_in_cgroup(pid, dir_path))
            continue;
        if (syscall(SYS_pidfd_send_signal, pfd, sig, NULL, 0) == 0)
            n++;
    }
    return n;
}

/* rmdir fails with EBUSY while the last tasks are still being torn down after SIGKILL; that
 * takes microseconds to a few milliseconds. */
static int rmdir_retry(const char *base, const char *name, struct ev_err *err, int tries)
{
    cleanup_close int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0)
        return ev_fail(err, errno, "open %s", base);
    for (int i = 0;; i++) {
        if (unlinkat(bfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY || i >= tries)
            return ev_fail(err, errno, "rmdir %s/%s", base, name);
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
}

static int kill_procs_in(const char *base, const char *name)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s/cgroup.procs", base, name);
    int killed = 0;
    for (int round = 0; round < 100; round++) {
        cleanup_fclose FILE *f = fopen(path, "re");
        if (!f)
            return killed;
        int pid, n = 0;
        while (fscanf(f, "%d", &pid) == 1) {
            kill(pid, SIGKILL);
            n++;
        }
        if (n == 0)
            return killed;
        killed += n;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return killed;
}

int cg_run_destroy(const struct cg_host *h, struct cg_run *r, struct ev_err *err)
{
    bool v2 = r->v2_fd >= 0, mem = r->mem_fd >= 0, pids = r->pids_fd >= 0, cpu = r->cpu_fd >= 0;
    run_close(r);
    int rc = 0;
    if (v2 && rmdir_retry(h->v2_base, r->name, err, 2000) < 0)
        rc = -1;
    if (mem && rmdir_retry(h->v1_memory, r->name, err, 2000) < 0)
        rc = -1;
    if (pids && rmdir_retry(h->v1_pids, r->name, err, 2000) < 0)
        rc = -1;
    if (cpu && rmdir_retry(h->v1_cpuacct, r->name, err, 2000) < 0)
        rc = -1;
    return rc;
}

/* Kills what is in base/name and removes it; nothing to do when it does not exist. */
static int remove_leftover(const char *base, const char *name, struct ev_err *err)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", base, name);
    cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : ev_fail(err, errno, "open %s", path);
    /* v2 (Linux >= 5.14): kills the whole cgroup at once; v1 and older kernels have no such
     * file and rely on the loop below. */
    struct ev_err ignored;
    write_file_at(fd, "cgroup.kill", "1", &ignored);
    kill_procs_in(base, name);
    return rmdir_retry(base, name, err, 2000);
}

/* Where the boxes' cgroups live: the v2 subtree when v2 is used, and the v1 hierarchy of each
 * controller v1 serves; NULL for the others. A controller on v2 lives in the v2 subtree, so a
 * box's cgroups are all found by looking in each non-NULL base. */
#define CG_BASES 4
static void cg_bases(const struct cg_host *h, const char *bases[CG_BASES])
{
    bases[0] = h->v2 ? h->v2_base : NULL;
    bases[1] = h->memory == CG_V1 ? h->v1_memory : NULL;
    bases[2] = h->pids == CG_V1 ? h->v1_pids : NULL;
    bases[3] = h->cpu == CG_V1 ? h->v1_cpuacct : NULL;
}

int cg_remove_stale(const struct cg_host *h, const char *name, struct ev_err *err)
{
    const char *bases[CG_BASES];
    cg_bases(h, bases);
    int rc = 0;
    for (int i = 0; i < CG_BASES; i++)
        if (bases[i] && remove_leftover(bases[i], name, err) < 0)
            rc = -1;
    return rc;
}

uint64_t cg_sample_interval_us(const struct cg_host *h)
{
    return h->memory == CG_V2 && !h->v2_peak ? SAMPLE_US : 0;
}

/* box-N -> N; -1 for anything else. */
static int box_number(const char *name)
{
    uint64_t n;
    if (strncmp(name, "box-", 4) != 0 || parse_u64(name + 4, &n) < 0 || n > 1000000)
        return -1;
    return (int)n;
}

/* Lists the box-N cgroups under base into names (at most max). */
static int list_boxes(const char *base, char (*names)[32], int max)
{
    cleanup_closedir DIR *d = opendir(base);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    while (n < max && (de = readdir(d)) != NULL)
        if (de->d_type == DT_DIR && box_number(de->d_name) >= 0)
            snprintf(names[n++], sizeof(names[0]), "%s", de->d_name);
    return n;
}

int cg_host_cleanup(const struct cg_host *h, const char *lock_dir, struct ev_err *err)
{
    const char *bases[CG_BASES];
    cg_bases(h, bases);
    cleanup_close int lfd = open(lock_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0)
        return ev_fail(err, errno, "open %s", lock_dir);
    int removed = 0;
    for (int i = 0; i < CG_BASES; i++) {
        if (!bases[i])
            continue;
        char names[256][32];
        /* More than 256 leftovers: the next pass (another shutdown, or the boxes' own
         * clean-up before reuse) takes the rest. */
        int n = list_boxes(bases[i], names, 256);
        for (int k = 0; k < n; k++) {
            char num[16];
            snprintf(num, sizeof(num), "%d", box_number(names[k]));
            /* A lock file that does not exist was never taken: nobody owns that box. */
            cleanup_close int fd = openat(lfd, num, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0 && errno != ENOENT)
                return ev_fail(err, errno, "open %s/%s", lock_dir, num);
            if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EWOULDBLOCK || errno == EINTR)
                    continue; /* a live box: its owner removes it */
                return ev_fail(err, errno, "flock %s/%s", lock_dir, num);
            }
            /* Held until fd closes, so no new owner takes the box while it is removed. */
            if (cg_remove_stale(h, names[k], err) < 0)
                return -1;
            removed++;
        }
        /* Our subtree itself goes when it is empty; while another live process has a box in
         * it, rmdir fails with EBUSY and the subtree stays for that process. */
        char parent[512];
        snprintf(parent, sizeof(parent), "%s", bases[i]);
        char *slash = strrchr(parent, '/');
        if (!slash || slash == parent)
            continue;
        *slash = '\0';
        struct ev_err e;
        if (rmdir_retry(parent, slash + 1, &e, 0) < 0 && e.errnum != EBUSY &&
            e.errnum != ENOTEMPTY) {
            *err = e;
            return -1;
        }
    }
    return removed;
}

int cg_list(const struct cg_host *h, const char *prefix, char (*names)[64], int max)
{
    const char *bases[CG_BASES];
    cg_bases(h, bases);
    size_t k = strlen(prefix);
    int n = 0;
    for (int i = 0; i < CG_BASES; i++) {
        if (!bases[i])
            continue;
        cleanup_closedir DIR *d = opendir(bases[i]);
        struct dirent *de;
        while (d && n < max && (de = readdir(d)) != NULL) {
            if (de->d_type != DT_DIR || strncmp(de->d_name, prefix, k) != 0 ||
                strlen(de->d_name) >= 64)
                continue;
            bool seen = false;
            for (int j = 0; j < n && !seen; j++)
                seen = strcmp(names[j], de->d_name) == 0;
            if (!seen)
                snprintf(names[n++], 64, "%s", de->d_name);
        }
    }
    return n;
}
