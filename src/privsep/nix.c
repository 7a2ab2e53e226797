#include "privsep/nix.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/path.h"
#include "common/pump.h"
#include "privsep/protocol.h"

/* Printed by the shell after nix-shell has set it up (and run its shellHook): the exported
 * environment, NUL-separated, on descriptor 3, apart from whatever the hook prints. */
static const char capture_command[] = "exec /usr/bin/env -0 >&3";

/* Memory and tasks of one Nix command, and of the daemon with its builds: generous
 * (evaluating nixpkgs takes hundreds of MB), but bounded, so a runaway build cannot take the
 * host down. */
#define NIX_MEMORY_BYTES (4ull << 30)
#define NIX_PIDS 4096

/* Where multi-user Nix listens, unless the deployer moved it (Nix reads the same variable). */
#define NIX_DAEMON_SOCKET "/nix/var/nix/daemon-socket/socket"
/* How long a daemon we start may take to answer on its socket. */
#define NIX_DAEMON_START_MS 10000
/* The build users a multi-user Nix needs, made when the host has none (Nix's default group). */
#define NIX_BUILD_GROUP "nixbld"
#define NIX_BUILD_USERS 8

/* What the helper knows of Nix, set once by nix_start. Nix commands run as the unprivileged
 * user, each in a PID namespace of its own whose init (a copy of the helper) exits when the
 * command exits or when the helper dies: the kernel then kills everything left in the
 * namespace, a shellHook's daemonised children included. The store is the daemon's (root):
 * an answering daemon is used as it is, and where none answers the helper starts one the
 * same way and restarts it when it is needed again after dying. docs/nix.md has the design. */
static struct {
    bool started;
    uid_t uid;
    gid_t gid;
    char user[64];
    char home[512];     /* HOME of Nix commands: channels, caches; made by the user itself */
    int self_pidfd;     /* this helper, for inits to see it die */
    int lock_fd;        /* lock_dir/nix-PID, held for the helper's life: its cgroups are live */
    pthread_mutex_t mu; /* the daemon below */
    pid_t daemon_init;  /* the init of the daemon we started, or 0 */
    dev_t sock_dev;     /* its socket, while nobody else has taken the name */
    ino_t sock_ino;
    struct cg_run daemon_cg;
    bool daemon_have_cg;
    const struct sbx_host *host;
    pid_t running[8]; /* inits of the commands running now, for nix_cancel_all */
    bool cancelled;
} N = {.self_pidfd = -1, .lock_fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

void nix_result_free(struct nix_result *r)
{
    free(r->out);
    free(r->err);
    free(r->env);
    memset(r, 0, sizeof(*r));
}

static uint64_t now_ms(void)
{
    return monotonic_ns() / 1000000;
}

/* Finds a Nix command: Nix's own profiles first, then the helper's PATH (Debian: /usr/bin). */
static int find_tool(const char *tool, char *out, size_t size)
{
    const char *path = getenv("PATH");
    if (find_in_path(tool, PS_NIX_PROFILE_BINS, out, size) == 0 ||
        find_in_path(tool, path ? path : "/usr/bin:/bin", out, size) == 0)
        return 0;
    return -1;
}

/* The environment of every Nix command: fixed, plus the deployer's Nix settings when the
 * server was started with them (NIX_PATH to point at a channel, NIX_CONFIG, certificates).
 * Commands run as the server's user and reach the store through the daemon; the daemon itself
 * runs as root. */
struct nix_envp {
    char *v[20];
    char path[600], home[600], user[80], logname[90];
};

static void nix_env(struct nix_envp *e, const char *tool, bool daemon)
{
    static const char *const passed[] = {
        "NIX_PATH",   "NIX_CONFIG",  "NIX_SSL_CERT_FILE",     "SSL_CERT_FILE",
        "http_proxy", "https_proxy", "NIX_DAEMON_SOCKET_PATH"};
    size_t n = 0;
    const char *slash = strrchr(tool, '/');
    snprintf(e->path, sizeof(e->path), "PATH=%.*s:/usr/bin:/bin", (int)(slash - tool), tool);
    snprintf(e->home, sizeof(e->home), "HOME=%s", daemon ? "/root" : N.home);
    snprintf(e->user, sizeof(e->user), "USER=%s", daemon ? "root" : N.user);
    snprintf(e->logname, sizeof(e->logname), "LOGNAME=%s", daemon ? "root" : N.user);
    e->v[n++] = e->path;
    e->v[n++] = e->home;
    e->v[n++] = e->user;
    e->v[n++] = e->logname;
    e->v[n++] = "LANG=C.UTF-8";
    e->v[n++] = "NIX_BUILD_SHELL=" PS_NIX_SHELL_BASH;
    if (!daemon)
        e->v[n++] = "NIX_REMOTE=daemon";
    for (size_t i = 0; i < sizeof(passed) / sizeof(passed[0]); i++) {
        size_t k = strlen(passed[i]);
        for (char **v = environ; v && *v; v++)
            if (strncmp(*v, passed[i], k) == 0 && (*v)[k] == '=') {
                e->v[n++] = *v;
                break;
            }
    }
    e->v[n] = NULL;
}

/* ---- Starting a command in a PID namespace of its own ---- */

struct spawn {
    char *const *argv, *const *envp;
    const char *cwd;
    bool as_user;       /* drop to the server's user (else: stays root, for the daemon) */
    int in, out, errfd; /* its 0, 1, 2 */
    int env_fd;         /* its 3 when >= 0 */
    const struct cg_run *cg;
};

/* The command itself, forked by the namespace's init. Only async-signal-safe calls: the helper
 * is multi-threaded. */
static __attribute__((noreturn)) void spawn_exec(const struct spawn *s)
{
    if (setsid() < 0)
        _exit(126);
    if (dup2(s->in, 0) < 0 || dup2(s->out, 1) < 0 || dup2(s->errfd, 2) < 0)
        _exit(126);
    if (s->env_fd >= 0 && (s->env_fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(s->env_fd, 3)) < 0)
        _exit(126);
    /* Nothing of the helper's but these (a descriptor some other thread has just made without
     * close-on-exec included). */
    syscall(SYS_close_range, s->env_fd >= 0 ? 4u : 3u, ~0u, 0);
    if (s->as_user) {
        /* The order matters: groups and gid while still root, the uid last. */
        if (setgroups(0, NULL) < 0 || setresgid(N.gid, N.gid, N.gid) < 0 ||
            setresuid(N.uid, N.uid, N.uid) < 0)
            _exit(126);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            _exit(126);
        /* The user's own home for Nix: made by the user, so root never creates or changes
         * anything inside the data directory that user owns. */
        if (mkdir(N.home, 0700) < 0 && errno != EEXIST)
            _exit(126);
    }
    umask(022);
    if (chdir(s->cwd) < 0)
        _exit(126);
    execve(s->argv[0], s->argv, s->envp);
    _exit(127);
}

/* PID 1 of the command's namespace. It exits when the command exits (with its status; 128 +
 * signal for a signal) or as soon as the helper is gone, whatever thread started it; either
 * way the kernel then kills every process left in the namespace. */
static __attribute__((noreturn)) void spawn_init(const struct spawn *s)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    /* A /proc of the namespace's own: the daemon's sandboxed builds write the uid_map of
     * children by the pids its namespace gives them. The host's mounts still reach it. */
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0 ||
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        _exit(126);
    if (s->cg) {
        if (s->cg->v2_procs_fd >= 0 && write(s->cg->v2_procs_fd, "0", 1) != 1)
            _exit(126);
        for (int i = 0; i < s->cg->n_join; i++)
            if (write(s->cg->join_fds[i], "0", 1) != 1)
                _exit(126);
    }
    /* The helper may have died between the clone and now. */
    struct pollfd p = {N.self_pidfd, POLLIN, 0};
    if (poll(&p, 1, 0) != 0)
        _exit(126);
    pid_t pid = fork();
    if (pid < 0)
        _exit(126);
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        for (int sig = 1; sig < NSIG; sig++)
            signal(sig, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        spawn_exec(s);
    }
    /* Keep nothing but the helper's pidfd; then wait for children through a signalfd. */
    int keep = N.self_pidfd;
    if (keep > 0)
        syscall(SYS_close_range, 0u, (unsigned)keep - 1, 0);
    syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        _exit(126);
    for (;;) {
        int st;
        pid_t w;
        while ((w = waitpid(-1, &st, WNOHANG)) > 0)
            if (w == pid)
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        struct pollfd f[2] = {{keep, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(f, 2, -1) < 0 && errno != EINTR)
            _exit(126);
        if (f[0].revents)
            _exit(137); /* the helper died */
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) > 0)
            ;
    }
}

/* Starts s in a new PID namespace; returns its init's pid, *pidfd a pidfd of it. */
static pid_t spawn_in_pidns(const struct spawn *s, int *pidfd, struct ev_err *err)
{
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        return ev_fail(err, errno, "clone a PID namespace for %s", s->argv[0]);
    if (pid == 0)
        spawn_init(s);
    *pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (*pidfd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return ev_fail(err, e, "pidfd_open");
    }
    return pid;
}

static void reap(pid_t pid, int *status)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (status)
        *status = st;
}

/* ---- cgroups of Nix commands: nix-HELPERPID-N and nix-HELPERPID-daemon ---- */

static atomic_uint cg_seq;

static void remove_cgroup(struct cg_run *cg)
{
    struct ev_err cerr;
    cg_run_kill(&N.host->cg, cg);
    if (cg_run_destroy(&N.host->cg, cg, &cerr) < 0 &&
        cg_remove_stale(&N.host->cg, cg->name, &cerr) < 0)
        fprintf(stderr, "envicutor helper: %s\n", cerr.msg);
}

/* Removes the cgroups of Nix commands whose helper is gone (killed, crashed): a live helper
 * holds the lock lock_dir/nix-PID for as long as it runs. */
static void remove_stale_cgroups(void)
{
    char names[256][64];
    int n = cg_list(&N.host->cg, "nix-", names, 256);
    cleanup_close int lfd = open(N.host->lock_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0)
        return;
    for (int i = 0; i < n; i++) {
        char owner[32];
        const char *dash = strchr(names[i] + 4, '-');
        if (!dash || (size_t)(dash - names[i]) >= sizeof(owner))
            continue;
        snprintf(owner, sizeof(owner), "%.*s", (int)(dash - names[i]), names[i]);
        cleanup_close int fd = openat(lfd, owner, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue; /* a live helper's */
        struct ev_err e;
        if (cg_remove_stale(&N.host->cg, names[i], &e) < 0)
            fprintf(stderr, "envicutor helper: stale Nix cgroup %s: %s\n", names[i], e.msg);
        else
            fprintf(stderr, "envicutor helper: removed the stale Nix cgroup %s\n", names[i]);
        if (fd >= 0)
            unlinkat(lfd, owner, 0);
    }
}

/* ---- The daemon ---- */

static const char *daemon_socket(void)
{
    const char *p = getenv("NIX_DAEMON_SOCKET_PATH");
    return p && p[0] == '/' ? p : NIX_DAEMON_SOCKET;
}

static bool daemon_answers(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    const char *path = daemon_socket();
    if (strlen(path) >= sizeof(a.sun_path))
        return false;
    memcpy(a.sun_path, path, strlen(path) + 1);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int r;
    while ((r = connect(fd, (struct sockaddr *)&a, sizeof(a))) < 0 && errno == EINTR)
        ;
    return r == 0;
}

/* Takes our daemon down (the kernel kills its workers and builds with its namespace). */
static void daemon_stop_locked(void)
{
    if (N.daemon_init > 0) {
        kill(N.daemon_init, SIGKILL);
        reap(N.daemon_init, NULL);
        N.daemon_init = 0;
    }
    if (N.daemon_have_cg) {
        remove_cgroup(&N.daemon_cg);
        N.daemon_have_cg = false;
    }
}

/* Makes sure a daemon answers: one already there (a service manager's, or another server's)
 * is used; otherwise ours is (re)started. */
static int ensure_daemon(struct ev_err *err)
{
    pthread_mutex_lock(&N.mu);
    int rc = 0;
    cleanup_close int null_fd = -1, pidfd = -1;
    /* Ours, alive, still at its socket: no need to knock (each knock is a line in its log). */
    struct stat st;
    if (N.daemon_init > 0 && waitpid(N.daemon_init, NULL, WNOHANG) == 0 &&
        stat(daemon_socket(), &st) == 0 && st.st_dev == N.sock_dev && st.st_ino == N.sock_ino)
        goto out;
    if (daemon_answers())
        goto out;
    /* Ours is gone, or alive but no longer reachable (another daemon took the socket's name
     * and has since stopped): start a new one. */
    if (N.daemon_init > 0) {
        int ws;
        if (waitpid(N.daemon_init, &ws, WNOHANG) == N.daemon_init) {
            fprintf(stderr, "envicutor helper: the Nix daemon exited (status %d); restarting it\n",
                    WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws));
            N.daemon_init = 0;
        }
        daemon_stop_locked();
    }
    char tool[512];
    if (find_tool("nix-daemon", tool, sizeof(tool)) < 0) {
        rc = ev_fail(err, 0, "no Nix daemon answers on %s and nix-daemon is not installed",
                     daemon_socket());
        goto out;
    }
    char name[32];
    snprintf(name, sizeof(name), "nix-%d-daemon", (int)getpid());
    struct cg_limits lim = {.memory_bytes = NIX_MEMORY_BYTES, .pids = NIX_PIDS};
    if (cg_run_create(&N.host->cg, name, &lim, &N.daemon_cg, err) < 0) {
        rc = -1;
        goto out;
    }
    N.daemon_have_cg = true;
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) {
        rc = ev_fail(err, errno, "open /dev/null");
        goto out;
    }
    struct nix_envp env;
    nix_env(&env, tool, true);
    char *argv[] = {tool, NULL};
    struct spawn s = {.argv = argv,
                      .envp = env.v,
                      .cwd = "/",
                      .in = null_fd,
                      .out = null_fd,
                      .errfd = 2,
                      .env_fd = -1,
                      .cg = &N.daemon_cg};
    pid_t pid = spawn_in_pidns(&s, &pidfd, err);
    if (pid < 0) {
        rc = -1;
        goto out;
    }
    N.daemon_init = pid;
    uint64_t deadline = now_ms() + NIX_DAEMON_START_MS;
    while (!daemon_answers()) {
        struct pollfd p = {pidfd, POLLIN, 0};
        if (poll(&p, 1, 10) > 0) {
            int ws;
            reap(pid, &ws);
            N.daemon_init = 0;
            rc = ev_fail(err, 0, "nix-daemon exited at start (status %d)",
                         WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws));
            goto out;
        }
        if (now_ms() >= deadline) {
            rc = ev_fail(err, 0, "nix-daemon did not answer on %s within %d ms", daemon_socket(),
                         NIX_DAEMON_START_MS);
            goto out;
        }
    }
    if (stat(daemon_socket(), &st) == 0) {
        N.sock_dev = st.st_dev;
        N.sock_ino = st.st_ino;
    }
    fprintf(stderr, "envicutor helper: started the Nix daemon (pid %d)\n", (int)pid);
out:
    if (rc < 0)
        daemon_stop_locked();
    pthread_mutex_unlock(&N.mu);
    return rc;
}

/* ---- Start-up and shut-down ---- */

static int run_fixed(const char *what, char *const argv[], struct ev_err *err)
{
    pid_t pid = fork();
    if (pid < 0)
        return ev_fail(err, errno, "fork for %s", what);
    if (pid == 0) {
        char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd >= 0)
            dup2(null_fd, 1);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    int st;
    reap(pid, &st);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return ev_fail(err, 0, "%s failed (%s exited with status %d)", what, argv[0],
                       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}

/* Multi-user Nix builds as members of a build group, which Debian's nix-bin leaves to a
 * service package a host without systemd does not have: made here when missing, as the
 * server's own user is. A host whose Nix is set up already keeps what it has. */
static int ensure_build_users(struct ev_err *err)
{
    struct group *g = getgrnam(NIX_BUILD_GROUP);
    if (!g) {
        char *argv[] = {"/usr/sbin/groupadd", "--system", NIX_BUILD_GROUP, NULL};
        if (run_fixed("making the Nix build group " NIX_BUILD_GROUP, argv, err) < 0)
            return -1;
        g = getgrnam(NIX_BUILD_GROUP);
        if (!g)
            return ev_fail(err, 0, "the group %s was made but cannot be found", NIX_BUILD_GROUP);
    }
    if (g->gr_mem && g->gr_mem[0])
        return 0;
    for (int i = 1; i <= NIX_BUILD_USERS; i++) {
        char name[32], comment[48];
        snprintf(name, sizeof(name), "%s%d", NIX_BUILD_GROUP, i);
        snprintf(comment, sizeof(comment), "Nix build user %d", i);
        if (getpwnam(name)) {
            char *argv[] = {"/usr/sbin/usermod", "--append", "--groups",
                            NIX_BUILD_GROUP,     name,       NULL};
            if (run_fixed("adding a Nix build user to its group", argv, err) < 0)
                return -1;
            continue;
        }
        char *argv[] = {"/usr/sbin/useradd",
                        "--system",
                        "--no-create-home",
                        "--home-dir",
                        "/var/empty",
                        "--shell",
                        "/usr/sbin/nologin",
                        "--gid",
                        NIX_BUILD_GROUP,
                        "--groups",
                        NIX_BUILD_GROUP,
                        "--comment",
                        comment,
                        name,
                        NULL};
        if (run_fixed("making a Nix build user", argv, err) < 0)
            return -1;
    }
    fprintf(stderr, "envicutor helper: made the Nix build users %s1-%d (group %s)\n",
            NIX_BUILD_GROUP, NIX_BUILD_USERS, NIX_BUILD_GROUP);
    return 0;
}

int nix_start(const struct sbx_host *host, const char *user, const char *data_dir,
              struct ev_err *err)
{
    N.host = host;
    char tool[512];
    if (find_tool("nix-shell", tool, sizeof(tool)) < 0)
        return 0; /* no Nix: the server says so to Nix requests */
    struct passwd *pw = getpwnam(user);
    if (!pw || pw->pw_uid == 0)
        return ev_fail(err, 0, "Nix: no unprivileged user named '%s'", user);
    N.uid = pw->pw_uid;
    N.gid = pw->pw_gid;
    snprintf(N.user, sizeof(N.user), "%s", user);
    if ((size_t)snprintf(N.home, sizeof(N.home), "%s/nix-home", data_dir) >= sizeof(N.home))
        return ev_fail(err, 0, "Nix: the data directory's path is too long");
    N.self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (N.self_pidfd < 0)
        return ev_fail(err, errno, "Nix: pidfd_open");
    cleanup_close int lfd = open(host->lock_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0)
        return ev_fail(err, errno, "open %s", host->lock_dir);
    char owner[32];
    snprintf(owner, sizeof(owner), "nix-%d", (int)getpid());
    N.lock_fd = openat(lfd, owner, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (N.lock_fd < 0 || flock(N.lock_fd, LOCK_EX) < 0)
        return ev_fail(err, errno, "lock %s/%s", host->lock_dir, owner);
    remove_stale_cgroups();
    if (ensure_build_users(err) < 0)
        return -1;
    N.started = true;
    return 0;
}

void nix_stop(void)
{
    pthread_mutex_lock(&N.mu);
    daemon_stop_locked();
    pthread_mutex_unlock(&N.mu);
    if (N.lock_fd >= 0) {
        char owner[300];
        snprintf(owner, sizeof(owner), "%s/nix-%d", N.host->lock_dir, (int)getpid());
        unlink(owner);
        close(N.lock_fd);
        N.lock_fd = -1;
    }
    if (N.self_pidfd >= 0)
        close(N.self_pidfd);
    N.self_pidfd = -1;
    N.started = false;
}

/* ---- Running one command ---- */

static bool track(pid_t pid)
{
    pthread_mutex_lock(&N.mu);
    bool ok = !N.cancelled;
    for (size_t i = 0; ok && i < sizeof(N.running) / sizeof(N.running[0]); i++)
        if (N.running[i] == 0) {
            N.running[i] = pid;
            break;
        }
    pthread_mutex_unlock(&N.mu);
    return ok;
}

static void untrack(pid_t pid)
{
    pthread_mutex_lock(&N.mu);
    for (size_t i = 0; i < sizeof(N.running) / sizeof(N.running[0]); i++)
        if (N.running[i] == pid)
            N.running[i] = 0;
    pthread_mutex_unlock(&N.mu);
}

static void cancel(bool for_good)
{
    pthread_mutex_lock(&N.mu);
    N.cancelled |= for_good;
    /* Killing an init takes its whole namespace down; the thread running the command reaps
     * it and answers. */
    for (size_t i = 0; i < sizeof(N.running) / sizeof(N.running[0]); i++)
        if (N.running[i] > 0)
            kill(N.running[i], SIGKILL);
    pthread_mutex_unlock(&N.mu);
}

void nix_cancel_running(void)
{
    cancel(false);
}

void nix_cancel_all(void)
{
    cancel(true);
}

/* Runs argv (argv[0] an absolute path) as the server's user in cwd, in a PID namespace and a
 * cgroup of its own, through the daemon, with /dev/null as stdin, stdout and stderr captured,
 * and env_fd (when >= 0) as its descriptor 3. When the command exits, its namespace goes with
 * it: whatever it left running is killed, so its pipes end and its exit status is the answer
 * (never a timeout). At the timeout the namespace and the cgroup are killed. */
static int run_tool(char *const *argv, const char *cwd, int env_fd, unsigned timeout_s,
                    struct nix_result *res, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    if (!N.started)
        return ev_fail(err, 0, "Nix was not set up at the helper's start");
    if (ensure_daemon(err) < 0)
        return -1;
    struct pump_buffer bufs[2] = {{.cap = NIX_MAX_OUTPUT}, {.cap = NIX_MAX_OUTPUT}};
    struct pump_stream sinks[2] = {{.fd = -1}, {.fd = -1}};
    int pipes[2][2] = {{-1, -1}, {-1, -1}};
    cleanup_close int null_fd = -1, pidfd = -1;
    int rc = -1;
    struct cg_run cg;
    bool have_cg = false;
    char name[32];
    snprintf(name, sizeof(name), "nix-%d-%u", (int)getpid(), atomic_fetch_add(&cg_seq, 1));
    for (int i = 0; i < 2; i++) {
        bufs[i].data = malloc(NIX_MAX_OUTPUT + 1);
        bufs[i].size = NIX_MAX_OUTPUT + 1;
        if (!bufs[i].data) {
            ev_fail(err, ENOMEM, "output buffer");
            goto out;
        }
        if (pipe2(pipes[i], O_CLOEXEC) < 0) {
            ev_fail(err, errno, "pipe");
            goto out;
        }
    }
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) {
        ev_fail(err, errno, "open /dev/null");
        goto out;
    }
    struct cg_limits lim = {.memory_bytes = NIX_MEMORY_BYTES, .pids = NIX_PIDS};
    if (cg_run_create(&N.host->cg, name, &lim, &cg, err) < 0)
        goto out;
    have_cg = true;
    struct nix_envp env;
    nix_env(&env, argv[0], false);
    struct spawn s = {.argv = argv,
                      .envp = env.v,
                      .cwd = cwd,
                      .as_user = true,
                      .in = null_fd,
                      .out = pipes[0][1],
                      .errfd = pipes[1][1],
                      .env_fd = env_fd,
                      .cg = &cg};
    pid_t pid = spawn_in_pidns(&s, &pidfd, err);
    if (pid < 0)
        goto out;
    if (!track(pid))
        kill(pid, SIGKILL); /* the helper is stopping */
    close(pipes[0][1]);
    close(pipes[1][1]);
    pipes[0][1] = pipes[1][1] = -1;
    for (int i = 0; i < 2; i++) {
        int fd = pipes[i][0];
        pipes[i][0] = -1;
        if (pump_reader(&sinks[i], fd, pump_buffer_consume, &bufs[i], err) < 0) {
            kill(pid, SIGKILL);
            reap(pid, NULL);
            untrack(pid);
            goto out;
        }
    }

    struct ev_err perr; /* a failed poll is answered like a timeout */
    int events[1] = {pidfd};
    bool exited = pump_run(sinks, 2, events, 1, monotonic_ns() + (uint64_t)timeout_s * 1000000000,
                           &perr) == 0;
    if (!exited) {
        res->timed_out = true;
        kill(pid, SIGKILL);
        cg_run_kill(&N.host->cg, &cg);
    }
    int status;
    reap(pid, &status);
    untrack(pid);
    /* Every process of the namespace is gone by now; what the pipes still hold is read, for a
     * short while at most should a copy of a write end live on elsewhere. */
    pump_run(sinks, 2, NULL, 0, monotonic_ns() + 2000000000ull, &perr);
    if (!res->timed_out && WIFEXITED(status))
        res->exit_code = WEXITSTATUS(status);
    rc = 0;
out:
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 2; k++)
            if (pipes[i][k] >= 0)
                close(pipes[i][k]);
        pump_close(&sinks[i]);
    }
    if (have_cg)
        remove_cgroup(&cg);
    if (rc == 0) {
        bufs[0].data[bufs[0].len] = bufs[1].data[bufs[1].len] = '\0';
        res->out = bufs[0].data;
        res->out_len = bufs[0].len;
        res->err = bufs[1].data;
        res->err_len = bufs[1].len;
    } else {
        free(bufs[0].data);
        free(bufs[1].data);
    }
    return rc;
}

/* Appends a line to the result's stderr (the reason the helper gives to the client). */
static void add_note(struct nix_result *res, const char *note)
{
    size_t n = strlen(note);
    char *p = realloc(res->err, res->err_len + n + 2);
    if (!p)
        return;
    res->err = p;
    if (res->err_len && res->err[res->err_len - 1] != '\n')
        res->err[res->err_len++] = '\n';
    memcpy(res->err + res->err_len, note, n);
    res->err_len += n;
    res->err[res->err_len] = '\0';
}

#define MAX_ROOTS 64

/* The store paths an environment names (/nix/store/HASH-NAME, up to the next '/'), those that
 * exist, without duplicates. */
static size_t store_paths(const char *env, size_t len, char paths[][256], size_t cap)
{
    static const char prefix[] = "/nix/store/";
    size_t n = 0;
    const char *end = env + len;
    for (const char *p = env; p < end && n < cap;) {
        const char *hit = memmem(p, (size_t)(end - p), prefix, sizeof(prefix) - 1);
        if (!hit)
            break;
        const char *q = hit + sizeof(prefix) - 1;
        while (q < end && *q && *q != '/' && *q != ':' && *q != ' ' && *q != '\n' && *q != '"' &&
               *q != '\'' && *q != ';')
            q++;
        size_t k = (size_t)(q - hit);
        p = q;
        if (k <= sizeof(prefix) + 33 || k >= 256) /* a 32-character hash and a name */
            continue;
        char path[256];
        memcpy(path, hit, k);
        path[k] = '\0';
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(paths[i], path) == 0;
        if (!dup)
            snprintf(paths[n++], 256, "%s", path);
    }
    return n;
}

int nix_install(const char *runtimes_dir, const char *name, unsigned timeout_s,
                struct nix_result *res, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    char dir[512], shell_nix[600], tool[512];
    snprintf(dir, sizeof(dir), "%s/%s", runtimes_dir, name);
    snprintf(shell_nix, sizeof(shell_nix), "%s/shell.nix", dir);
    struct stat st;
    if (lstat(shell_nix, &st) < 0 || !S_ISREG(st.st_mode))
        return ev_fail(err, 0, "%s is not a regular file", shell_nix);
    if (find_tool("nix-shell", tool, sizeof(tool)) < 0)
        return ev_fail(err, 0, "nix-shell not found");
    char *argv[] = {tool, "--pure", shell_nix, "--run", (char *)capture_command, NULL};
    cleanup_close int env_fd = memfd_create("envicutor-nix-env", MFD_CLOEXEC);
    if (env_fd < 0)
        return ev_fail(err, errno, "memfd_create");
    uint64_t t0 = now_ms();
    if (run_tool(argv, dir, env_fd, timeout_s, res, err) < 0)
        return -1;
    if (res->timed_out) {
        char note[160];
        snprintf(note, sizeof(note),
                 "envicutor: the installation timeout expired (%u seconds): nix-shell and every "
                 "process it started were killed",
                 timeout_s);
        add_note(res, note);
        return 0;
    }
    if (res->exit_code != 0)
        return 0;
    if (read_whole_fd(env_fd, NIX_MAX_ENV, "the environment", &res->env, &res->env_len, err) < 0)
        return -1;
    if (res->env_len == 0 || res->env[res->env_len - 1] != '\0') {
        res->exit_code = 1;
        add_note(res, "envicutor: nix-shell printed no environment");
        return 0;
    }
    /* GC roots: one indirect root per store path the environment names. */
    char(*paths)[256] = calloc(MAX_ROOTS, 256);
    if (!paths)
        return ev_fail(err, ENOMEM, "store paths");
    size_t n = store_paths(res->env, res->env_len, paths, MAX_ROOTS);
    if (n > 0) {
        char store_tool[512], root[600];
        if (find_tool("nix-store", store_tool, sizeof(store_tool)) < 0) {
            free(paths);
            return ev_fail(err, 0, "nix-store not found");
        }
        snprintf(root, sizeof(root), "%s/gcroot", dir);
        char *rargv[MAX_ROOTS + 6] = {store_tool, "--realise", "--add-root", root};
        for (size_t i = 0; i < n; i++)
            rargv[4 + i] = paths[i];
        rargv[4 + n] = NULL;
        uint64_t spent = (now_ms() - t0) / 1000;
        unsigned left = spent + 10 < timeout_s ? timeout_s - (unsigned)spent : 10;
        struct nix_result rr;
        int r = run_tool(rargv, dir, -1, left, &rr, err);
        free(paths);
        if (r < 0)
            return -1;
        if (rr.exit_code != 0) {
            res->exit_code = 1;
            add_note(res, "envicutor: could not add the runtime's GC roots:");
            add_note(res, rr.err ? rr.err : "");
        }
        nix_result_free(&rr);
    } else {
        free(paths);
    }
    return 0;
}

int nix_update(unsigned timeout_s, struct nix_result *res, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    char channel[512], nixenv[512];
    if (find_tool("nix-channel", channel, sizeof(channel)) < 0 ||
        find_tool("nix-env", nixenv, sizeof(nixenv)) < 0)
        return ev_fail(err, 0, "nix-channel or nix-env not found");
    uint64_t t0 = now_ms();
    char *argv[] = {channel, "--update", NULL};
    if (run_tool(argv, "/", -1, timeout_s, res, err) < 0)
        return -1;
    if (res->timed_out)
        add_note(res, "envicutor: the update timeout expired: nix-channel was killed");
    if (res->exit_code != 0)
        return 0;
    uint64_t spent = (now_ms() - t0) / 1000;
    if (spent >= timeout_s) {
        res->exit_code = -1;
        res->timed_out = true;
        add_note(res, "envicutor: the update timeout expired before nix-env -u");
        return 0;
    }
    struct nix_result r2;
    char *argv2[] = {nixenv, "--upgrade", NULL};
    if (run_tool(argv2, "/", -1, timeout_s - (unsigned)spent, &r2, err) < 0)
        return -1;
    /* one answer: both commands' output, in order */
    char *o = malloc(res->out_len + r2.out_len + 1), *e = malloc(res->err_len + r2.err_len + 1);
    if (o && e) {
        memcpy(o, res->out, res->out_len);
        memcpy(o + res->out_len, r2.out, r2.out_len + 1);
        memcpy(e, res->err, res->err_len);
        memcpy(e + res->err_len, r2.err, r2.err_len + 1);
        free(res->out);
        free(res->err);
        res->out = o;
        res->err = e;
        res->out_len += r2.out_len;
        res->err_len += r2.err_len;
        res->exit_code = r2.exit_code;
        res->timed_out = r2.timed_out;
        if (r2.timed_out)
            add_note(res, "envicutor: the update timeout expired: nix-env was killed");
    } else {
        free(o);
        free(e);
        nix_result_free(&r2);
        return ev_fail(err, ENOMEM, "update output");
    }
    nix_result_free(&r2);
    return 0;
}

int nix_gc(unsigned timeout_s, struct nix_result *res, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    char tool[512];
    if (find_tool("nix-store", tool, sizeof(tool)) < 0)
        return ev_fail(err, 0, "nix-store not found");
    char *argv[] = {tool, "--gc", NULL};
    if (run_tool(argv, "/", -1, timeout_s, res, err) < 0)
        return -1;
    if (res->timed_out)
        add_note(res, "envicutor: the garbage collection timeout expired: nix-store was killed");
    return 0;
}
