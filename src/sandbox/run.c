/* One run: clone into fresh namespaces, set the box up, exec the program, watch it, measure it,
 * tear everything down.
 *
 * Process layout. The caller clones `init` into new PID, mount, IPC, UTS, network and cgroup
 * namespaces, born inside the run's cgroup. init builds the file system view and brings up
 * loopback, then forks `main`, which drops every privilege and execs the command. init stays
 * as PID 1 of the box: it reaps orphans, reports main's wait status to the caller over a pipe,
 * and exits, and its exit makes the kernel kill every process left in the PID namespace —
 * daemonised children and background children holding the output pipes included. A limit kill
 * is a SIGKILL to init, with the same effect.
 *
 * Timing. main's exec-report pipe is close-on-exec: the caller sees end-of-file at the moment
 * execve succeeds, and the wall clock and the CPU baseline start there, so none of the
 * sandbox's set-up is counted.
 *
 * The caller side reads as its steps: validate, prepare (root, stdin, pipes, cgroup), start
 * (clone init), watch, tear down, verdict. Watching is the pump's poll loop (common/pump.h)
 * over stdout and stderr, with the report, status and cancel pipes as its events and the CPU
 * counter and wall clock checked between its steps; output goes to the capped buffers of the
 * result or to the run's on_output consumer.
 *
 * The child side shares the memory of the caller, a possibly multi-threaded process that keeps
 * running (below, "init shares the caller's memory"): it allocates nothing, writes nothing of
 * the caller's but its own stacks and thread-local block, and calls only system calls and
 * snprintf on stack buffers. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grp.h>
#include <linux/capability.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/filename.h"
#include "common/path.h"
#include "common/pump.h"
#include "sandbox/mounts.h"
#include "sandbox/roots.h"
#include "sandbox/sandbox.h"

/* CLONE_NEWCGROUP is not among them: init unshares it once it sits in all its cgroups; nor are
 * CLONE_NEWNET when a namespace made ahead is at hand (init joins it) and CLONE_NEWNS when the
 * box has a prepared root (init enters a copy of it). */
#define NS_FLAGS (CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)

enum report_kind { REPORT_SETUP = 1, REPORT_EXEC = 2, REPORT_START = 3 };

/* What init sends when main has ended: its wait status, and the run's CPU counter and the
 * clock at that moment, before init's own exit tears the namespaces down (work the kernel
 * charges to the run's cgroup, and that is not the program's). */
struct end_mark {
    int status;
    int have_cpu;
    uint64_t cpu_usec;
    uint64_t t_ns;
};

/* What the child sends back when it fails before execve. */
struct report {
    int kind;
    int errnum;
    char msg[400];
    /* REPORT_START: the run's CPU counter and the monotonic clock just before execve */
    uint64_t cpu_usec;
    uint64_t t_ns;
};

struct child_ctx {
    const struct sbx_host *host;
    const struct sbx_box *box;
    const struct sbx_run_config *cfg;
    struct root_plan plan;
    const struct cg_run *cg;
    bool joined;  /* born in its v2 cgroup by clone3 */
    int stdin_fd; /* the ends the program gets */
    int out_w, err_w;
    int report_w; /* close-on-exec: EOF at execve */
    int status_w; /* init -> caller: main's wait status */
    int net_fd;   /* a fresh network namespace made ahead, loopback up; -1: clone made one */
    int root_fd;  /* the box's prepared root (borrowed); -1: init builds the tree */
    const char *workdir;
    int cpu_dirfd;        /* the cgroup directory holding the CPU counter */
    bool cpu_v2;          /* cpu.stat usage_usec (v2) or cpuacct.usage in ns (v1) */
    char *main_stack_top; /* main's stack while it shares init's memory */
};

/* ---- child side ------------------------------------------------------------------------- */

static __attribute__((noreturn)) void child_fail(const struct child_ctx *c, int kind,
                                                 const struct ev_err *e)
{
    struct report r = {.kind = kind, .errnum = e->errnum};
    snprintf(r.msg, sizeof(r.msg), "%s", e->msg);
    write_full(c->report_w, &r, sizeof(r));
    _exit(127);
}

/* The run's CPU counter in microseconds, read from inside the box's processes through the
 * cgroup directory descriptor the caller opened. */
static int read_cpu(const struct child_ctx *c, uint64_t *usec)
{
    if (c->cpu_dirfd < 0)
        return -1;
    uint64_t v;
    struct ev_err ignored; /* the caller falls back to reading the counter itself */
    if (c->cpu_v2)
        return read_keyed_u64_at(c->cpu_dirfd, "cpu.stat", "usage_usec", usec, &ignored);
    if (read_u64_at(c->cpu_dirfd, "cpuacct.usage", &v, &ignored) < 0)
        return -1;
    *usec = v / 1000;
    return 0;
}

static int set_limit(int resource, uint64_t value, const char *name, struct ev_err *err)
{
    struct rlimit cur;
    if (getrlimit(resource, &cur) < 0)
        return ev_fail(err, errno, "getrlimit %s", name);
    /* Without CAP_SYS_RESOURCE a hard limit can be lowered, never raised: clamp to it. */
    rlim_t v = value >= (uint64_t)RLIM_INFINITY ? RLIM_INFINITY : (rlim_t)value;
    if (cur.rlim_max != RLIM_INFINITY && (v == RLIM_INFINITY || v > cur.rlim_max))
        v = cur.rlim_max;
    struct rlimit rl = {v, v};
    if (setrlimit(resource, &rl) < 0)
        return ev_fail(err, errno, "setrlimit %s=%llu", name, (unsigned long long)v);
    return 0;
}

static int apply_rlimits(const struct sbx_limits *l, struct ev_err *err)
{
    uint64_t stack_kb = l->stack_kb ? l->stack_kb : l->memory_kb;
    if (set_limit(RLIMIT_NOFILE, l->max_open_files, "RLIMIT_NOFILE", err) < 0 ||
        set_limit(RLIMIT_FSIZE, l->max_file_size_kb * 1024, "RLIMIT_FSIZE", err) < 0 ||
        set_limit(RLIMIT_STACK, stack_kb * 1024, "RLIMIT_STACK", err) < 0 ||
        set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE", err) < 0 ||
        set_limit(RLIMIT_MEMLOCK, 0, "RLIMIT_MEMLOCK", err) < 0 ||
        set_limit(RLIMIT_MSGQUEUE, 0, "RLIMIT_MSGQUEUE", err) < 0)
        return -1;
    return 0;
}

/* The kernel's last capability (/proc/sys/kernel/cap_last_cap), read once by the caller before
 * its first clone; 63 when unknown, and then the loop below stops at the first EINVAL. */
static int cap_last = 63;

static int drop_privileges(uid_t uid, gid_t gid, struct ev_err *err)
{
    /* capabilities are numbered from 0 to the kernel's last one without gaps: EINVAL past it */
    for (int cap = 0; cap <= cap_last; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
            continue;
        if (errno == EINVAL)
            break;
        return ev_fail(err, errno, "drop capability %d from the bounding set", cap);
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return ev_fail(err, errno, "clear ambient capabilities");
    /* Raw system calls, not glibc's wrappers: in a process cloned from a multi-threaded
     * caller, glibc still lists the caller's other threads and would wait forever for them to
     * acknowledge the uid change (its set*id calls are broadcast to every thread). */
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        return ev_fail(err, errno, "setgroups");
    if (syscall(SYS_setresgid, gid, gid, gid) < 0)
        return ev_fail(err, errno, "setresgid %u", (unsigned)gid);
    if (syscall(SYS_setresuid, uid, uid, uid) < 0)
        return ev_fail(err, errno, "setresuid %u", (unsigned)uid);
    /* setresuid away from 0 already empties the permitted and effective sets; clearing all
     * three explicitly leaves no doubt about the inheritable one. */
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0}};
    if (syscall(SYS_capset, &hdr, data) < 0)
        return ev_fail(err, errno, "capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return ev_fail(err, errno, "no_new_privs");
    return 0;
}

static const char *env_path(char *const *envp)
{
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            return *e + 5;
    return "/usr/local/bin:/usr/bin:/bin";
}

/* execvpe would search the caller's PATH; the program's own environment is the one that
 * counts. */
static int exec_search(char *const *argv, char *const *envp)
{
    const char *file = argv[0];
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        return -1;
    }
    const char *cursor = env_path(envp);
    int first_errno = ENOENT;
    char path[4096];
    while (path_next(&cursor, file, path, sizeof(path))) {
        execve(path, argv, envp);
        if (errno != ENOENT && errno != ENOTDIR)
            first_errno = errno;
    }
    errno = first_errno;
    return -1;
}

static __attribute__((noreturn)) void run_main(const struct child_ctx *c)
{
    struct ev_err e = {0};
    if (dup2(c->stdin_fd, 0) < 0 || dup2(c->out_w, 1) < 0 || dup2(c->err_w, 2) < 0) {
        ev_fail(&e, errno, "dup2 stdio");
        child_fail(c, REPORT_SETUP, &e);
    }
    /* The program and everything it starts are the OOM killer's first choice, before the box's
     * init (lowering init instead would need CAP_SYS_RESOURCE, which hosts may not grant).
     * Before the rlimits: with RLIMIT_NOFILE at 4 there would be no descriptor to spare. */
    if (write_file_at(AT_FDCWD, "/proc/self/oom_score_adj", "1000", &e) < 0)
        child_fail(c, REPORT_SETUP, &e);
    if (apply_rlimits(&c->cfg->limits, &e) < 0)
        child_fail(c, REPORT_SETUP, &e);
    if (chdir(c->workdir) < 0) {
        ev_fail(&e, errno, "working directory %s", c->workdir);
        child_fail(c, REPORT_SETUP, &e);
    }
    if (drop_privileges(c->box->uid, c->box->gid, &e) < 0)
        child_fail(c, REPORT_SETUP, &e);
    /* Every descriptor but stdio goes at execve, the report pipe included (it already has
     * O_CLOEXEC; that is the point of it). */
    if (syscall(SYS_close_range, 3, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
        ev_fail(&e, errno, "close_range");
        child_fail(c, REPORT_SETUP, &e);
    }
    struct sock_fprog prog = {.len = c->host->bpf_len, .filter = c->host->bpf};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        ev_fail(&e, errno, "install the seccomp filter");
        child_fail(c, REPORT_SETUP, &e);
    }
    /* The baseline of the run's time, taken here rather than when the caller notices the
     * execve: on a loaded machine the caller may wake up milliseconds later, and the program's
     * first CPU time would go uncounted. Without it the caller measures at end of file. */
    struct report start = {.kind = REPORT_START};
    if (read_cpu(c, &start.cpu_usec) == 0) {
        start.t_ns = monotonic_ns();
        write_full(c->report_w, &start, sizeof(start));
    }
    exec_search(c->cfg->argv, c->cfg->envp);
    ev_fail(&e, errno, "cannot execute '%s'", c->cfg->argv[0]);
    child_fail(c, REPORT_EXEC, &e);
}

/* The 64-bit mask after `key` in /proc/self/status (hex, bit n-1 for signal n). */
static bool status_mask(const char *status, const char *key, uint64_t *mask)
{
    const char *p = strstr(status, key);
    if (!p)
        return false;
    p += strlen(key);
    uint64_t v = 0;
    int digits = 0;
    for (; digits < 16; p++, digits++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0)
            break;
        v = v << 4 | (uint64_t)d;
    }
    if (digits == 0 || *p != '\n')
        return false;
    *mask = v;
    return true;
}

/* Every signal back to its default disposition: init is PID 1 of the box, so a signal sent
 * from inside it would run a handler of the caller's, and an ignored one would stay ignored
 * through main's execve. init's dispositions are its own copy (no CLONE_SIGHAND), so the
 * kernel's list of those that are not the default (SigIgn, SigCgt) is exact, and one read of
 * it replaces 64 sigaction calls; all 64 are reset when it cannot be read. The raw system call:
 * glibc's sigaction refuses its own two signals (32 and 33, whose handlers it installs once the
 * caller has a thread), and they too must not keep a handler of the caller's. */
static void reset_signals(void)
{
    struct { /* the kernel's struct sigaction */
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        uint64_t mask;
    } sa = {.handler = SIG_DFL};
    uint64_t changed = ~0ull;
    char status[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read_full(fd, status, sizeof(status) - 1);
        close(fd);
        uint64_t ign, cgt;
        if (n > 0) {
            status[n] = '\0';
            if (status_mask(status, "\nSigIgn:\t", &ign) &&
                status_mask(status, "\nSigCgt:\t", &cgt))
                changed = ign | cgt;
        }
    }
    for (int sig = 1; sig < NSIG && sig <= 64; sig++)
        if (changed & 1ull << (sig - 1))
            syscall(SYS_rt_sigaction, sig, &sa, NULL, sizeof(sa.mask));
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Closes every descriptor but the `n` in keep. In a multi-threaded caller, clone copies the
 * descriptors of runs other threads are setting up at that moment, their pipes included; a
 * copy held here would keep another run's pipes open (its caller would wait for an end of file
 * that only our exit brings) and would count against this run's descriptor limit. */
static void close_all_except(int *keep, int n)
{
    for (int i = 1; i < n; i++) /* insertion sort: a handful of descriptors */
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    unsigned from = 0;
    for (int i = 0; i < n; i++) {
        if (keep[i] < 0)
            continue;
        if ((unsigned)keep[i] > from)
            syscall(SYS_close_range, from, (unsigned)keep[i] - 1, 0);
        from = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, from, ~0u, 0);
}

/* Read once by the caller, before its first clone. */
static pthread_once_t caller_once = PTHREAD_ONCE_INIT;

static void read_cap_last(void)
{
    uint64_t v;
    struct ev_err ignored; /* drop_privileges then probes for the end */
    if (read_u64_at(AT_FDCWD, "/proc/sys/kernel/cap_last_cap", &v, &ignored) == 0 && v < 64)
        cap_last = (int)v;
}

/* main's stack when init is a copy of the caller (no init slot, below): in the data segment, so
 * each init's copy is its own and the caller, which never touches it, pays nothing for it. */
static char main_stack[64 * 1024] __attribute__((aligned(16)));

static int main_entry(void *arg)
{
    run_main(arg);
}

static __attribute__((noreturn)) void run_init(const struct child_ctx *c)
{
    struct ev_err e = {0};
    int keep[9 + 4 + SBX_MAX_FILES] = {c->stdin_fd, c->out_w,    c->err_w,
                                       c->report_w, c->status_w, c->cpu_dirfd,
                                       c->net_fd,   c->root_fd,  c->cg->v2_procs_fd};
    int n_keep = 9;
    for (int i = 0; i < c->cg->n_join && i < 4; i++)
        keep[n_keep++] = c->cg->join_fds[i];
    for (size_t i = 0; i < c->plan.n_files && i < SBX_MAX_FILES; i++)
        keep[n_keep++] = c->plan.files[i].fd;
    close_all_except(keep, n_keep);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
        ev_fail(&e, errno, "set the parent-death signal");
        child_fail(c, REPORT_SETUP, &e);
    }
    /* The box reads /proc/1/comm; its /proc/1/cmdline is covered (sandbox/mounts.c). */
    (void)prctl(PR_SET_NAME, "init", 0, 0, 0); /* cannot fail for a valid pointer */
    reset_signals();
    if (c->net_fd >= 0) {
        if (setns(c->net_fd, CLONE_NEWNET) < 0) {
            ev_fail(&e, errno, "join the network namespace made ahead");
            child_fail(c, REPORT_SETUP, &e);
        }
        close(c->net_fd);
    }
    /* v1 hierarchies (and v2 when clone3 could not place us) are joined by writing "0",
     * which moves the writer. */
    if (!c->joined && c->cg->v2_procs_fd >= 0 && write_full(c->cg->v2_procs_fd, "0", 1) < 0) {
        ev_fail(&e, errno, "join cgroup %s", c->cg->name);
        child_fail(c, REPORT_SETUP, &e);
    }
    for (int i = 0; i < c->cg->n_join; i++) {
        if (write_full(c->cg->join_fds[i], "0", 1) < 0) {
            ev_fail(&e, errno, "join cgroup %s", c->cg->name);
            child_fail(c, REPORT_SETUP, &e);
        }
    }
    /* The cgroup namespace is rooted where the process is when it is created, so it is
     * created only now that we are in the run's cgroups. */
    if (unshare(CLONE_NEWCGROUP) < 0) {
        ev_fail(&e, errno, "cgroup namespace");
        child_fail(c, REPORT_SETUP, &e);
    }
    if ((c->root_fd >= 0 ? mounts_enter_template(&c->plan, c->root_fd, &e)
                         : mounts_build_root(&c->plan, &e)) < 0 ||
        (c->net_fd < 0 && netns_loopback_up(&e) < 0))
        child_fail(c, REPORT_SETUP, &e);
    if (c->root_fd >= 0)
        close(c->root_fd);
    if (sethostname("box", 3) < 0) {
        ev_fail(&e, errno, "sethostname");
        child_fail(c, REPORT_SETUP, &e);
    }
    /* main shares init's memory and init sleeps until main's execve or exit (posix_spawn's
     * way): a fork would copy the page tables of the memory init shares with the caller (or of
     * init's copy of it) and make the pages init writes afterwards fault once more
     * (docs/performance.md). main writes nothing of init's but its own stack and errno (in the
     * thread-local block init uses, which init reads only when this clone fails); what main
     * changes is its own (descriptor table, credentials, rlimits, seccomp, and oom_score_adj,
     * which the kernel keeps to a vfork child alone, as it does not without CLONE_VFORK); and it
     * is alone in the box until execve. */
    pid_t pid = clone(main_entry, c->main_stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, (void *)c);
    if (pid < 0) {
        ev_fail(&e, errno, "fork the program");
        child_fail(c, REPORT_SETUP, &e);
    }
    close(c->report_w);
    close(c->stdin_fd);
    close(c->out_w);
    close(c->err_w);
    for (;;) {
        int status;
        pid_t r = waitpid(-1, &status, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            _exit(1);
        if (r == pid) {
            struct end_mark end = {.status = status, .t_ns = monotonic_ns()};
            end.have_cpu = read_cpu(c, &end.cpu_usec) == 0;
            write_full(c->status_w, &end, sizeof(end));
            _exit(0); /* and the kernel kills whatever is left in the namespace */
        }
    }
}

/* ---- caller side ------------------------------------------------------------------------ */

/* ---- init shares the caller's memory ----
 *
 * Cloning init as a copy of the caller copies the caller's page tables and, when init exits,
 * frees them again: 1-2 ms of each run on a guest where page-table work is dear
 * (docs/performance.md). So init is cloned with CLONE_VM, on a stack of its own, and shares the
 * caller's memory as main shares init's; unlike main it runs alongside the caller (no
 * CLONE_VFORK), with its own descriptor table and signal dispositions (no CLONE_FILES, no
 * CLONE_SIGHAND), as before.
 *
 * What init must not share is the calling thread's thread-local block: glibc's wrappers write
 * errno there, its cancellation points and locks go by it, and the calling thread keeps using
 * it. init gets one of its own by CLONE_SETTLS: the block of a thread made for that alone
 * (made by glibc like any thread's, so everything glibc and the sanitizers keep in it is
 * there), which then waits forever in a system call with every signal blocked and never runs
 * again. An init slot is such a block and the two stacks of init and main; a run holds one from
 * before its clone until its init is reaped, and the slots are reused, one per run at a time.
 * The kernel's pid namespace teardown ends every process of the box before init is reaped, main
 * included, so nothing runs on a slot once it is given back.
 *
 * What init reads of the caller's memory (the run's configuration, the host's, the box's, the
 * cgroup's descriptors) is the caller's sbx_run frame or outlives it, and does not change until
 * init is reaped. Its writes: its stacks, its thread-local block, and the pipes.
 *
 * Where a slot cannot be had (another architecture, no thread, or a clone with CLONE_VM refused,
 * as valgrind does), init is a copy of the caller as before. */
#if defined(__x86_64__)
#define INIT_SLOTS 1
#endif

#define INIT_STACK_SIZE (256 * 1024)
#define MAIN_STACK_SIZE (128 * 1024)
#define SLOT_GUARD 4096

struct init_slot {
    struct init_slot *next;
    bool busy;
    void *tls;        /* the thread pointer of the waiting thread */
    char *init_stack; /* lowest address of init's stack (INIT_STACK_SIZE) */
    char *main_stack; /* and of main's (MAIN_STACK_SIZE) */
};

static int init_entry(void *arg)
{
    run_init(arg);
}

#ifdef INIT_SLOTS
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct init_slot *slots;

/* The thread whose block a slot lends: it publishes its thread pointer, then waits in raw
 * system calls (no errno, nothing of its own block touched) for a signal that never comes. */
static void *slot_thread(void *arg)
{
    struct init_slot *s = arg;
    __atomic_store_n(&s->tls, __builtin_thread_pointer(), __ATOMIC_RELEASE);
    for (;;) {
        long rax = SYS_pause;
        __asm__ volatile("syscall" : "+a"(rax) : : "rcx", "r11", "memory");
    }
    return NULL;
}

static struct init_slot *slot_new(void)
{
    size_t size = SLOT_GUARD + INIT_STACK_SIZE + SLOT_GUARD + MAIN_STACK_SIZE;
    char *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    struct init_slot *s = calloc(1, sizeof(*s));
    if (!s || mprotect(m, SLOT_GUARD, PROT_NONE) < 0 ||
        mprotect(m + SLOT_GUARD + INIT_STACK_SIZE, SLOT_GUARD, PROT_NONE) < 0) {
        free(s);
        munmap(m, size);
        return NULL;
    }
    s->init_stack = m + SLOT_GUARD;
    s->main_stack = m + SLOT_GUARD + INIT_STACK_SIZE + SLOT_GUARD;
    pthread_attr_t attr;
    sigset_t all, old;
    sigfillset(&all);
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        /* the thread starts with every signal blocked (glibc keeps its two internal ones, whose
         * handlers use raw system calls and atomics only) */
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t t;
        rc = pthread_create(&t, &attr, slot_thread, s);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        free(s);
        munmap(m, size);
        return NULL;
    }
    while (!__atomic_load_n(&s->tls, __ATOMIC_ACQUIRE))
        sched_yield();
    return s;
}

static struct init_slot *slot_take(void)
{
    pthread_mutex_lock(&slots_lock);
    struct init_slot *s = slots;
    while (s && s->busy)
        s = s->next;
    if (s)
        s->busy = true;
    pthread_mutex_unlock(&slots_lock);
    if (s)
        return s;
    s = slot_new();
    if (!s)
        return NULL;
    s->busy = true;
    pthread_mutex_lock(&slots_lock);
    s->next = slots;
    slots = s;
    pthread_mutex_unlock(&slots_lock);
    return s;
}

static void slot_give(struct init_slot *s)
{
#ifdef __SANITIZE_ADDRESS__
    /* the frames of an init or main killed mid-call leave their redzones poisoned */
    __asan_unpoison_memory_region(s->init_stack, INIT_STACK_SIZE);
    __asan_unpoison_memory_region(s->main_stack, MAIN_STACK_SIZE);
#endif
    pthread_mutex_lock(&slots_lock);
    s->busy = false;
    pthread_mutex_unlock(&slots_lock);
}

/* clone3 with a stack of the child's own: the child must not return from the system call into
 * a caller's frame it does not have (glibc has no clone3 of its own to call). Returns the pid
 * or -errno; the child runs fn(arg) and exits with its result. */
static long clone3_on_stack(struct clone_args *args, int (*fn)(void *), void *arg)
{
    register long rax __asm__("rax") = SYS_clone3;
    register void *rdi __asm__("rdi") = args;
    register long rsi __asm__("rsi") = (long)sizeof(*args);
    register void *r12 __asm__("r12") = arg;
    register void *r13 __asm__("r13") = (void *)fn;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "mov %%r12, %%rdi\n\t"
                     "call *%%r13\n\t"
                     "mov %%eax, %%edi\n\t"
                     "mov %[nr_exit], %%eax\n\t"
                     "syscall\n\t"
                     "ud2\n"
                     "1:"
                     : "+r"(rax)
                     : "r"(rdi), "r"(rsi), "r"(r12), "r"(r13), [nr_exit] "i"(SYS_exit)
                     : "rcx", "r11", "memory");
    return rax;
}
#else
static struct init_slot *slot_take(void)
{
    return NULL;
}

static void slot_give(struct init_slot *s)
{
    (void)s;
}
#endif

/* Clones init (born in the run's v2 cgroup by clone3 where it can be), sharing the caller's
 * memory when *slot is given; when that is refused, *slot is given back and cleared, and init
 * is a copy of the caller. */
static pid_t clone_init(struct child_ctx *c, struct init_slot **slot, bool new_net, bool new_mnt)
{
    const struct cg_run *cg = c->cg;
    uint64_t flags = NS_FLAGS | (new_net ? CLONE_NEWNET : 0) | (new_mnt ? CLONE_NEWNS : 0);
    struct init_slot *s = *slot;
    c->main_stack_top = s ? s->main_stack + MAIN_STACK_SIZE : main_stack + sizeof(main_stack);
    bool try_clone3 = cg->v2_fd >= 0;
#ifdef INIT_SLOTS
    if (s) {
        if (try_clone3) {
            struct clone_args args = {
                .flags = flags | CLONE_INTO_CGROUP | CLONE_VM | CLONE_SETTLS,
                .exit_signal = SIGCHLD,
                .stack = (uint64_t)(uintptr_t)s->init_stack,
                .stack_size = INIT_STACK_SIZE,
                .tls = (uint64_t)(uintptr_t)s->tls,
                .cgroup = (uint64_t)cg->v2_fd,
            };
            c->joined = true;
            long pid = clone3_on_stack(&args, init_entry, c);
            if (pid >= 0)
                return (pid_t)pid;
            if (pid != -ENOSYS && pid != -E2BIG && pid != -EINVAL) {
                errno = (int)-pid;
                return -1;
            }
            try_clone3 = false; /* nor without CLONE_VM */
        }
        c->joined = false;
        pid_t pid = clone(init_entry, s->init_stack + INIT_STACK_SIZE,
                          (int)flags | CLONE_VM | CLONE_SETTLS | SIGCHLD, c, NULL, s->tls, NULL);
        if (pid >= 0 || errno != EINVAL)
            return pid;
        slot_give(s); /* CLONE_VM refused (valgrind does): init is a copy */
        *slot = NULL;
        c->main_stack_top = main_stack + sizeof(main_stack);
    }
#endif
    if (try_clone3) {
        struct clone_args args = {
            .flags = flags | CLONE_INTO_CGROUP,
            .exit_signal = SIGCHLD,
            .cgroup = (uint64_t)cg->v2_fd,
        };
        c->joined = true;
        pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0)
            run_init(c);
        if (pid > 0)
            return pid;
        if (errno != ENOSYS && errno != E2BIG && errno != EINVAL)
            return -1;
    }
    c->joined = false;
    pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        run_init(c);
    return pid;
}

/* What the caller sees of one run while it watches it. */
struct watch {
    int report_r, status_r;
    bool exec_seen, main_done, report_failed, init_died;
    struct report reports[2]; /* a REPORT_START, a failure, or a start then a failure */
    size_t report_got;
    struct report report; /* the failure, when report_failed */
    struct end_mark end;
    uint64_t t_start, t_end, cpu0;
    bool cpu_killed, wall_killed, cancelled;
    uint64_t setup_deadline, next_cpu_check, cpu_kill_at, ncpu;
    /* measured at tear-down */
    uint64_t cpu_end, peak;
    bool oom;
};

/* One run on the caller's side: what set-up made, what watching saw. */
struct run {
    struct sbx_host *host;
    struct sbx_box *box;
    const struct sbx_run_config *cfg;
    int stdin_fd;
    int stdout_fd;   /* cfg->stdout_fd's copy, until init has it; -1: stdout is pipes[0] */
    int stderr_fd;   /* the same for stderr and pipes[1] */
    int root_fd;     /* the box's prepared root (the cache's); -1: init builds the tree */
    int pipes[4][2]; /* stdout (unless stdout_fd), stderr, report, status */
    struct cg_run cg;
    pid_t init;             /* -1: the clone failed */
    struct child_ctx child; /* what init reads */
    struct init_slot *slot; /* init's thread-local block and stacks; NULL: init is a copy */
    /* stdout and stderr, each pumped into its buffer or handed to cfg->on_output */
    struct pump_stream streams[2];
    struct pump_buffer bufs[2];
    struct output_tap {
        const struct sbx_run_config *cfg;
        int stream;
    } taps[2];
    struct watch w;
};

/* Makes sense of what came through the report pipe: an optional REPORT_START, then an
 * optional failure, which goes to w->report with w->report_failed set. Returns the start. */
static const struct report *report_parse(struct watch *w)
{
    size_t n = w->report_got / sizeof(struct report);
    const struct report *start =
        n >= 1 && w->reports[0].kind == REPORT_START ? &w->reports[0] : NULL;
    const struct report *fail =
        start ? (n >= 2 ? &w->reports[1] : NULL) : (n >= 1 ? &w->reports[0] : NULL);
    if (fail || (w->report_got % sizeof(struct report)) != 0) {
        w->report_failed = true;
        if (fail)
            w->report = *fail;
        else
            snprintf(w->report.msg, sizeof(w->report.msg), "a truncated report from the box");
        w->report.kind = fail ? fail->kind : REPORT_SETUP;
    }
    return start;
}

/* ---- validate ---- */

static int run_validate(const struct sbx_run_config *cfg, struct ev_err *err)
{
    const struct sbx_limits *l = &cfg->limits;
    if (!cfg->argv || !cfg->argv[0] || !cfg->argv[0][0])
        return ev_fail(err, 0, "no command to run");
    if (cfg->n_mounts > SBX_MAX_MOUNTS)
        return ev_fail(err, 0, "at most %d extra mounts", SBX_MAX_MOUNTS);
    for (size_t i = 0; i < cfg->n_mounts; i++)
        if (mounts_check_target(cfg->mounts[i].target, err) < 0)
            return -1;
    if (cfg->n_files > SBX_MAX_FILES)
        return ev_fail(err, 0, "at most %d files", SBX_MAX_FILES);
    if (cfg->n_files && !cfg->fresh_box)
        return ev_fail(err, 0, "files are added to a fresh box only");
    for (size_t i = 0; i < cfg->n_files; i++)
        if (!cfg->files[i].name || !plain_file_name(cfg->files[i].name) || cfg->files[i].fd < 0)
            return ev_fail(err, 0, "file %zu: a plain name and a descriptor are needed", i);
    if (!l->wall_time_us || !l->cpu_time_us || !l->memory_kb || !l->max_processes ||
        !l->max_open_files || !l->tmp_kb)
        return ev_fail(err, 0,
                       "wall time, CPU time, memory, processes, open files and /tmp size "
                       "must all be positive");
    return 0;
}

/* ---- set up ---- */

static void close_pipes(int p[4][2])
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            if (p[i][j] >= 0)
                close(p[i][j]);
}

/* What the box needs before it is cloned: its prepared root, stdin, the pipes and the cgroup.
 * On failure nothing is left to undo but r->stdin_fd and r->stdout_fd. */
static int run_prepare(struct run *r, struct ev_err *err)
{
    const struct sbx_run_config *cfg = r->cfg;
    /* The box's prepared root (built on its first run; the descriptor is the cache's), before
     * anything that would need undoing if building it failed. */
    if (r->host->roots && roots_fit(r->host->roots, cfg->mounts, cfg->n_mounts)) {
        r->root_fd = roots_get(r->host, r->box, err);
        if (r->root_fd == -1)
            return -1;
        if (r->root_fd < 0)
            r->root_fd = -1; /* no room for more prepared roots: this run builds its own tree */
    }

    /* A descriptor is shared with the program, offset included, and never opened again by a
     * path (which would bypass how it was opened); 0 means none, as for cancel_fd. */
    const char *stdin_path = cfg->stdin_path ? cfg->stdin_path : "/dev/null";
    if (cfg->stdin_fd > 0)
        r->stdin_fd = fcntl(cfg->stdin_fd, F_DUPFD_CLOEXEC, 0);
    else
        r->stdin_fd = open(stdin_path, O_RDONLY | O_CLOEXEC);
    if (r->stdin_fd < 0) {
        if (cfg->stdin_fd > 0)
            return ev_fail(err, errno, "stdin descriptor %d", cfg->stdin_fd);
        return ev_fail(err, errno, "stdin file %s", stdin_path);
    }
    if (cfg->stdout_fd > 0) {
        r->stdout_fd = fcntl(cfg->stdout_fd, F_DUPFD_CLOEXEC, 0);
        if (r->stdout_fd < 0)
            return ev_fail(err, errno, "stdout descriptor %d", cfg->stdout_fd);
    }
    if (cfg->stderr_fd > 0) {
        r->stderr_fd = fcntl(cfg->stderr_fd, F_DUPFD_CLOEXEC, 0);
        if (r->stderr_fd < 0)
            return ev_fail(err, errno, "stderr descriptor %d", cfg->stderr_fd);
    }
    for (int i = 0; i < 4; i++)
        if ((i == 0 && r->stdout_fd >= 0) || (i == 1 && r->stderr_fd >= 0))
            continue; /* that stream goes to the caller's descriptor */
        else if (pipe2(r->pipes[i], O_CLOEXEC) < 0) {
            ev_fail(err, errno, "pipe");
            close_pipes(r->pipes);
            return -1;
        }

    char cg_name[32];
    snprintf(cg_name, sizeof(cg_name), "box-%d", r->box->id);
    struct cg_limits cgl = {
        .memory_bytes = cfg->limits.memory_kb * 1024,
        /* init, PID 1 of the box, is one more task than the program's own */
        .pids = cfg->limits.max_processes + 1,
    };
    if (cg_run_create(&r->host->cg, cg_name, &cgl, &r->cg, err) < 0) {
        close_pipes(r->pipes);
        return -1;
    }
    return 0;
}

static int output_tap(void *ctx, const char *buf, size_t n)
{
    const struct output_tap *t = ctx;
    return t->cfg->on_output(t->cfg->output_ctx, t->stream, buf, n);
}

/* Clones the box's init, which sets the box up and starts the program, and hands the read
 * ends of stdout and stderr to the pump. */
static int run_start(struct run *r, struct ev_err *err)
{
    /* init reads it until it is reaped: it lives in sbx_run's frame, not this one */
    r->child = (struct child_ctx){
        .host = r->host,
        .box = r->box,
        .cfg = r->cfg,
        .plan = {.host = r->host,
                 .box_dir = r->box->dir,
                 .uid = r->box->uid,
                 .gid = r->box->gid,
                 .tmp_kb = r->cfg->limits.tmp_kb,
                 .mounts = r->cfg->mounts,
                 .n_mounts = r->cfg->n_mounts,
                 .fresh_box = r->cfg->fresh_box,
                 .box_kb = r->box->disk_kb,
                 .box_inodes = r->box->max_inodes,
                 .files = r->cfg->files,
                 .n_files = r->cfg->n_files},
        .cg = &r->cg,
        .stdin_fd = r->stdin_fd,
        .out_w = r->stdout_fd >= 0 ? r->stdout_fd : r->pipes[0][1],
        .err_w = r->stderr_fd >= 0 ? r->stderr_fd : r->pipes[1][1],
        .report_w = r->pipes[2][1],
        .status_w = r->pipes[3][1],
        .workdir = r->cfg->workdir ? r->cfg->workdir : "/box",
        .cpu_dirfd = r->host->cg.cpu == CG_V2 ? r->cg.v2_fd : r->cg.cpu_fd,
        .cpu_v2 = r->host->cg.cpu == CG_V2,
    };
    struct child_ctx *c = &r->child;
    c->root_fd = r->root_fd;
    pthread_once(&caller_once, read_cap_last);
    c->net_fd = r->host->netns ? netns_pool_take(r->host->netns) : -1;
    r->slot = slot_take();
    r->init = clone_init(c, &r->slot, c->net_fd < 0, c->root_fd < 0);
    int clone_errno = errno;
    if (r->init < 0 && r->slot) {
        slot_give(r->slot);
        r->slot = NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (r->pipes[i][1] >= 0)
            close(r->pipes[i][1]);
        r->pipes[i][1] = -1;
    }
    /* Once init has them, the program's stdin and stdout are theirs alone: a copy kept here
     * of a pipe's end would keep the other side of that pipe (another run) from seeing end of
     * file, or EPIPE, when this program ends. */
    close(r->stdin_fd);
    r->stdin_fd = -1;
    if (r->stdout_fd >= 0) {
        close(r->stdout_fd);
        r->stdout_fd = -1;
    }
    if (r->stderr_fd >= 0) {
        close(r->stderr_fd);
        r->stderr_fd = -1;
    }
    if (c->net_fd >= 0)
        close(c->net_fd);
    r->w.report_r = r->pipes[2][0];
    r->w.status_r = r->pipes[3][0];

    int rc = 0;
    for (int i = 0; i < 2; i++) {
        r->taps[i] = (struct output_tap){r->cfg, i + 1};
        r->bufs[i].cap = r->cfg->limits.max_output_bytes;
        if (r->pipes[i][0] < 0)
            continue; /* stdout went to a descriptor of the caller's */
        if (pump_reader(&r->streams[i], r->pipes[i][0],
                        r->cfg->on_output ? output_tap : pump_buffer_consume,
                        r->cfg->on_output ? (void *)&r->taps[i] : (void *)&r->bufs[i], err) < 0)
            rc = -1;
        r->pipes[i][0] = -1;
    }
    if (r->init < 0)
        return ev_fail(err, clone_errno, "clone the box");
    return rc;
}

/* ---- watch ---- */

enum { EV_REPORT, EV_STATUS, EV_CANCEL, EV_SIGNAL };

/* The report pipe is readable: a start report, a failure, or end of file at execve. */
static int on_report(struct run *r, struct ev_err *err)
{
    struct watch *w = &r->w;
    ssize_t n =
        read(w->report_r, (char *)w->reports + w->report_got, sizeof(w->reports) - w->report_got);
    if (n > 0)
        w->report_got += (size_t)n;
    if (n > 0 || (n < 0 && errno == EINTR))
        return 0;
    close(w->report_r);
    w->report_r = -1;
    const struct report *start = report_parse(w);
    if (w->report_failed)
        return 0;
    /* end of file without a failure: execve succeeded */
    w->exec_seen = true;
    if (r->host->netns)
        netns_pool_refill(r->host->netns);
    if (start) {
        w->t_start = start->t_ns;
        w->cpu0 = start->cpu_usec;
        return 0;
    }
    w->t_start = monotonic_ns();
    return cg_run_cpu_usec(&r->host->cg, &r->cg, &w->cpu0, err);
}

/* The status pipe is readable: main's end mark from init, or end of file when init died. */
static void on_status(struct watch *w)
{
    ssize_t n = read_full(w->status_r, &w->end, sizeof(w->end));
    w->t_end = monotonic_ns();
    if (n == (ssize_t)sizeof(w->end)) {
        w->main_done = true;
        if (w->end.t_ns > w->t_start && w->end.t_ns < w->t_end)
            w->t_end = w->end.t_ns;
    } else /* init died without a word: its report, if any, is read after teardown */
        w->init_died = true;
}

/* The wall clock and the CPU counter. Returns 1 when a limit is reached (the kill flag set),
 * 0 with the time the pump may wait before looking again, or -1. */
static int watch_clock(struct run *r, uint64_t *wait_us, struct ev_err *err)
{
    struct watch *w = &r->w;
    const struct sbx_limits *l = &r->cfg->limits;
    uint64_t now = monotonic_ns();
    *wait_us = 1000000;
    if (!w->exec_seen) {
        if (now >= w->setup_deadline)
            return ev_fail(err, ETIMEDOUT, "the box did not start within 30 seconds");
        return 0;
    }
    uint64_t elapsed = (now - w->t_start) / 1000;
    if (elapsed >= l->wall_time_us) {
        w->wall_killed = true;
        return 1;
    }
    if (now >= w->next_cpu_check) {
        uint64_t used = 0;
        if (cg_run_cpu_usec(&r->host->cg, &r->cg, &used, err) < 0)
            return -1;
        used = used > w->cpu0 ? used - w->cpu0 : 0;
        if (used >= w->cpu_kill_at) {
            w->cpu_killed = true;
            return 1;
        }
        cg_run_sample_memory(&r->host->cg, &r->cg);
        /* CPU time grows at most ncpu times faster than the wall clock: no need to look again
         * before the remaining budget could be spent. This also keeps an output flood, which
         * wakes us constantly, from costing a read per wake-up. */
        uint64_t cpu_wait = (w->cpu_kill_at - used) / w->ncpu;
        if (cpu_wait > 1000000)
            cpu_wait = 1000000;
        w->next_cpu_check = now + cpu_wait * 1000;
    }
    uint64_t cpu_wait = w->next_cpu_check > now ? (w->next_cpu_check - now) / 1000 : 0;
    uint64_t wall_wait = l->wall_time_us - elapsed;
    *wait_us = cpu_wait < wall_wait ? cpu_wait : wall_wait;
    if (*wait_us > 1000000)
        *wait_us = 1000000;
    /* without memory.peak, the peak is what sampling sees */
    uint64_t sample_us = cg_sample_interval_us(&r->host->cg);
    if (sample_us && *wait_us > sample_us)
        *wait_us = sample_us;
    return 0;
}

/* Signals asked for while the program runs (only once it was exec'd, so that no signal meets
 * the box's set-up). Returns 0 at end of file. */
static int on_signal(struct run *r, int fd)
{
    unsigned char sigs[16];
    ssize_t n = read(fd, sigs, sizeof(sigs));
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    for (ssize_t i = 0; i < n; i++)
        if (sigs[i] == SIGKILL || sigs[i] == SIGTERM || sigs[i] == SIGINT)
            cg_run_signal(&r->cg, sigs[i], r->init);
    return n > 0;
}

/* Pumps the output until main ends, a limit is reached, the run is cancelled or the watching
 * fails. */
static int run_watch(struct run *r, struct ev_err *err)
{
    struct watch *w = &r->w;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    w->ncpu = ncpu < 1 ? 1 : (uint64_t)ncpu;
    w->cpu_kill_at = r->cfg->limits.cpu_time_us + r->cfg->limits.extra_time_us;
    w->setup_deadline = monotonic_ns() + 30ull * 1000000000ull;
    int cancel_fd = r->cfg->cancel_fd > 0 ? r->cfg->cancel_fd : -1;
    int signal_fd = r->cfg->signal_fd > 0 ? r->cfg->signal_fd : -1;
    int rc = 0;
    while (!w->main_done && rc == 0) {
        uint64_t wait_us;
        rc = watch_clock(r, &wait_us, err);
        if (rc != 0)
            break;
        if (wait_us < 1000)
            wait_us = 1000;
        int events[4] = {[EV_REPORT] = w->report_r,
                         [EV_STATUS] = w->status_r,
                         [EV_CANCEL] = cancel_fd,
                         [EV_SIGNAL] = w->exec_seen ? signal_fd : -1};
        unsigned ready;
        rc = pump_step(r->streams, 2, events, 4, (int)((wait_us + 999) / 1000), &ready, err);
        if (rc == 0 && (ready & 1u << EV_SIGNAL) && on_signal(r, signal_fd) == 0)
            signal_fd = -1; /* its writer is gone */
        if (rc == 0 && (ready & 1u << EV_CANCEL)) {
            w->cancelled = true;
            rc = ev_fail(err, ECANCELED, "the run was cancelled");
        }
        if (rc == 0 && (ready & 1u << EV_REPORT))
            rc = on_report(r, err);
        if (rc == 0 && (ready & 1u << EV_STATUS)) {
            on_status(w);
            break;
        }
    }
    if (!w->t_end)
        w->t_end = monotonic_ns();
    return rc < 0 ? -1 : 0;
}

/* ---- tear down ---- */

/* Kills what is left of the box, reads what is left in the pipes, measures the run and
 * removes its cgroup. Returns rc, or -1 when one of these failed. */
static int run_teardown(struct run *r, int rc, struct ev_err *err)
{
    struct watch *w = &r->w;
    if (r->host->netns && !w->exec_seen)
        netns_pool_refill(r->host->netns);
    if (r->init > 0) {
        cg_run_kill(&r->host->cg, &r->cg);
        kill(r->init, SIGKILL);
        int ist;
        while (waitpid(r->init, &ist, 0) < 0 && errno == EINTR)
            ;
    }
    if (r->slot) { /* init is gone, and every process of its box with it */
        slot_give(r->slot);
        r->slot = NULL;
    }
    /* Every writer is dead now; read what is left in the pipes. */
    for (int i = 0; i < 2; i++)
        while (pump_drain(&r->streams[i]))
            ;
    if (w->report_r >= 0) {
        /* the box died before exec or before we read the report */
        ssize_t n = read_full(w->report_r, (char *)w->reports + w->report_got,
                              sizeof(w->reports) - w->report_got);
        if (n > 0)
            w->report_got += (size_t)n;
        report_parse(w);
        close(w->report_r);
    }
    close(w->status_r);

    w->cpu_end = w->cpu0;
    struct ev_err merr;
    if (rc == 0 && r->init > 0) {
        if (w->main_done && w->end.have_cpu)
            w->cpu_end = w->end.cpu_usec;
        else if (cg_run_cpu_usec(&r->host->cg, &r->cg, &w->cpu_end, &merr) < 0)
            rc = -1;
        if (rc == 0 && cg_run_memory(&r->host->cg, &r->cg, &w->peak, &w->oom, &merr) < 0)
            rc = -1;
        if (rc < 0)
            *err = merr;
    }
    struct ev_err derr;
    if (cg_run_destroy(&r->host->cg, &r->cg, &derr) < 0 && rc == 0) {
        *err = derr;
        rc = -1;
    }
    if (rc == 0 && (r->streams[0].failed || r->streams[1].failed))
        rc = r->cfg->on_output ? ev_fail(err, 0, "the consumer of the program's output failed")
                               : ev_fail(err, ENOMEM, "buffering the program's output");
    return rc;
}

/* ---- decide ---- */

/* Failures of the box itself, which the program did not cause. */
static int box_failure(struct watch *w, struct ev_err *err)
{
    if (w->report_failed && w->report.kind == REPORT_SETUP) {
        w->report.msg[sizeof(w->report.msg) - 1] = '\0';
        return ev_fail(err, 0, "setting the box up: %s", w->report.msg);
    }
    if (w->init_died && !w->report_failed && !(w->oom && w->exec_seen)) {
        /* The OOM killer may pick init when the memory is in tmpfs pages that belong to no
         * process; that is a memory-limit kill like any other (below), not a failure. */
        return ev_fail(err, 0, "the box's init process died unexpectedly");
    }
    return 0;
}

static int run_verdict(struct run *r, int rc, struct sbx_result *res, struct ev_err *err)
{
    struct watch *w = &r->w;
    const struct sbx_limits *l = &r->cfg->limits;
    if (rc < 0 || box_failure(w, err) < 0) {
        res->status = SBX_XX;
        snprintf(res->message, sizeof(res->message), "%s", err->msg);
        return -1;
    }
    res->cpu_time_us = w->exec_seen && w->cpu_end > w->cpu0 ? w->cpu_end - w->cpu0 : 0;
    res->wall_time_us = w->exec_seen ? (w->t_end - w->t_start) / 1000 : 0;
    res->memory_kb = w->peak / 1024;
    res->memory_limit_exceeded = w->oom;
    if (w->main_done) {
        if (WIFEXITED(w->end.status))
            res->exit_code = WEXITSTATUS(w->end.status);
        else if (WIFSIGNALED(w->end.status))
            res->exit_signal = WTERMSIG(w->end.status);
    } else {
        res->exit_signal = SIGKILL; /* we killed it */
    }
    res->cpu_limit_exceeded = w->cpu_killed || res->cpu_time_us > l->cpu_time_us;
    res->wall_limit_exceeded = w->wall_killed || res->wall_time_us > l->wall_time_us;

    if (w->report_failed) { /* execve failed: reported like a shell would */
        res->status = SBX_RE;
        res->exit_code = 127;
        res->exit_signal = -1;
        w->report.msg[sizeof(w->report.msg) - 1] = '\0';
        snprintf(res->message, sizeof(res->message), "%s", w->report.msg);
    } else if (res->cpu_limit_exceeded) {
        res->status = SBX_TO;
        snprintf(res->message, sizeof(res->message), "Time limit exceeded");
    } else if (res->wall_limit_exceeded) {
        res->status = SBX_TO;
        snprintf(res->message, sizeof(res->message), "Time limit exceeded (wall clock)");
    } else if (res->exit_signal >= 0) {
        res->status = SBX_SG;
        if (w->oom && res->exit_signal == SIGKILL)
            snprintf(res->message, sizeof(res->message), "Memory limit exceeded");
        else
            snprintf(res->message, sizeof(res->message), "Caught fatal signal %d",
                     res->exit_signal);
    } else if (res->exit_code != 0) {
        res->status = SBX_RE;
        snprintf(res->message, sizeof(res->message), "Exited with error status %d", res->exit_code);
    } else {
        res->status = SBX_OK;
        res->message[0] = '\0';
    }
    return 0;
}

int sbx_run(struct sbx_host *host, struct sbx_box *box, const struct sbx_run_config *cfg,
            struct sbx_result *res, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    res->exit_code = res->exit_signal = -1;
    res->status = SBX_XX;
    struct run r = {.host = host,
                    .box = box,
                    .cfg = cfg,
                    .stdin_fd = -1,
                    .stdout_fd = -1,
                    .stderr_fd = -1,
                    .root_fd = -1,
                    .pipes = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}},
                    .streams = {{.fd = -1}, {.fd = -1}}};
    if (run_validate(cfg, err) < 0 || run_prepare(&r, err) < 0) {
        if (r.stdin_fd >= 0)
            close(r.stdin_fd);
        if (r.stdout_fd >= 0)
            close(r.stdout_fd);
        if (r.stderr_fd >= 0)
            close(r.stderr_fd);
        snprintf(res->message, sizeof(res->message), "%s", err->msg);
        return -1;
    }
    int rc = run_start(&r, err);
    if (rc == 0)
        rc = run_watch(&r, err);
    rc = run_teardown(&r, rc, err);
    res->out = (struct sbx_output){r.bufs[0].data, r.bufs[0].len, r.bufs[0].truncated};
    res->err = (struct sbx_output){r.bufs[1].data, r.bufs[1].len, r.bufs[1].truncated};
    return run_verdict(&r, rc, res, err);
}
