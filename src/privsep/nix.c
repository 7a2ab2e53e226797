#include "privsep/nix.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"

/* The bash nix-shell starts. Without nixpkgs, nix-shell cannot find bashInteractive and falls
 * back on the bash in PATH; with nixpkgs it would fetch one. Either way the runs must have
 * the same bash inside their boxes, so it is fixed: the host's /bin/bash, which every box has
 * (the host's /usr is mounted read-only in each box), set through NIX_BUILD_SHELL. */
#define NIX_SHELL_BASH "/bin/bash"

/* Printed by the shell after nix-shell has set it up (and run its shellHook): the exported
 * environment, NUL-separated, on descriptor 3, apart from whatever the hook prints. */
static const char capture_command[] = "exec /usr/bin/env -0 >&3";

/* Memory and tasks of one Nix command: generous (evaluating nixpkgs takes hundreds of MB),
 * but bounded, so a runaway build cannot take the host down. */
#define NIX_MEMORY_BYTES (4ull << 30)
#define NIX_PIDS 4096

void nix_result_free(struct nix_result *r)
{
    free(r->out);
    free(r->err);
    free(r->env);
    memset(r, 0, sizeof(*r));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Finds a Nix command: Nix's own profiles first, then the helper's PATH (Debian: /usr/bin). */
static int find_tool(const char *tool, char *out, size_t size)
{
    static const char *const fixed[] = {"/nix/var/nix/profiles/default/bin",
                                        "/run/current-system/sw/bin"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        snprintf(out, size, "%s/%s", fixed[i], tool);
        if (access(out, X_OK) == 0)
            return 0;
    }
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (d[0] != '/')
            continue;
        snprintf(out, size, "%s/%s", d, tool);
        if (access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

/* The environment of every Nix command: fixed, plus the deployer's Nix settings when the
 * server was started with them (NIX_PATH to point at a channel, NIX_CONFIG, certificates). */
static size_t nix_env(char **envp, size_t cap, char *path_buf, size_t path_size, const char *tool)
{
    static const char *const passed[] = {"NIX_PATH",      "NIX_CONFIG", "NIX_SSL_CERT_FILE",
                                         "SSL_CERT_FILE", "http_proxy", "https_proxy"};
    static char *const fixed[] = {"HOME=/root", "USER=root", "LOGNAME=root", "LANG=C.UTF-8",
                                  "NIX_BUILD_SHELL=" NIX_SHELL_BASH};
    size_t n = 0;
    const char *slash = strrchr(tool, '/');
    snprintf(path_buf, path_size, "PATH=%.*s:/usr/bin:/bin", (int)(slash - tool), tool);
    envp[n++] = path_buf;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        envp[n++] = fixed[i];
    for (size_t i = 0; i < sizeof(passed) / sizeof(passed[0]) && n + 1 < cap; i++) {
        size_t k = strlen(passed[i]);
        for (char **e = environ; e && *e; e++)
            if (strncmp(*e, passed[i], k) == 0 && (*e)[k] == '=') {
                envp[n++] = *e;
                break;
            }
    }
    envp[n] = NULL;
    return n;
}

struct sink {
    int fd;
    char *buf;
    size_t len, cap;
};

static int sink_read(struct sink *s)
{
    char tmp[65536];
    ssize_t n = read(s->fd, tmp, sizeof(tmp));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0) {
        close(s->fd);
        s->fd = -1;
        return 0;
    }
    size_t keep = (size_t)n;
    if (keep > s->cap - s->len)
        keep = s->cap - s->len; /* over the cap: read and dropped */
    memcpy(s->buf + s->len, tmp, keep);
    s->len += keep;
    return 1;
}

static atomic_uint cg_seq;

/* Runs argv (argv[0] an absolute path) as root in cwd, in a process group and a cgroup of its
 * own, with /dev/null as stdin, stdout and stderr captured, and env_fd (when >= 0) as its
 * descriptor 3. Stops at the timeout: the cgroup and the group are killed. When the command
 * itself exits, whatever it left running in its cgroup is killed too. */
static int run_tool(const struct sbx_host *host, char *const *argv, char *const *envp,
                    const char *cwd, int env_fd, unsigned timeout_s, struct nix_result *res,
                    struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    struct sink sinks[2] = {{-1, NULL, 0, NIX_MAX_OUTPUT}, {-1, NULL, 0, NIX_MAX_OUTPUT}};
    int pipes[2][2] = {{-1, -1}, {-1, -1}};
    cleanup_close int null_fd = -1;
    int rc = -1;
    struct cg_run cg;
    bool have_cg = false;
    char name[32];
    snprintf(name, sizeof(name), "nix-%d-%u", (int)getpid(), atomic_fetch_add(&cg_seq, 1));
    for (int i = 0; i < 2; i++) {
        sinks[i].buf = malloc(NIX_MAX_OUTPUT + 1);
        if (!sinks[i].buf) {
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
    if (cg_run_create(&host->cg, name, &lim, &cg, err) < 0)
        goto out;
    have_cg = true;

    pid_t pid = fork();
    if (pid < 0) {
        ev_fail(err, errno, "fork");
        goto out;
    }
    if (pid == 0) {
        /* The helper is multi-threaded: only async-signal-safe calls from here on. */
        if (setpgid(0, 0) < 0)
            _exit(126);
        if (cg.v2_procs_fd >= 0 && write(cg.v2_procs_fd, "0", 1) != 1)
            _exit(126);
        for (int i = 0; i < cg.n_join; i++)
            if (write(cg.join_fds[i], "0", 1) != 1)
                _exit(126);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (dup2(null_fd, 0) < 0 || dup2(pipes[0][1], 1) < 0 || dup2(pipes[1][1], 2) < 0)
            _exit(126);
        if (env_fd == 3 && fcntl(3, F_SETFD, 0) < 0)
            _exit(126);
        if (env_fd >= 0 && env_fd != 3 && dup2(env_fd, 3) < 0)
            _exit(126);
        if (chdir(cwd) < 0)
            _exit(126);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    close(pipes[0][1]);
    close(pipes[1][1]);
    pipes[0][1] = pipes[1][1] = -1;
    sinks[0].fd = pipes[0][0];
    sinks[1].fd = pipes[1][0];
    pipes[0][0] = pipes[1][0] = -1;

    uint64_t deadline = now_ms() + (uint64_t)timeout_s * 1000;
    bool exited = false, killed = false;
    int status = 0;
    for (;;) {
        if (!exited) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) {
                exited = true;
                /* What the command left behind (a daemonised child of a hook) goes with it;
                 * then the pipes reach their end. */
                cg_run_kill(&host->cg, &cg);
            } else if (w < 0 && errno != EINTR) {
                ev_fail(err, errno, "waitpid");
                break;
            }
        }
        if (exited && sinks[0].fd < 0 && sinks[1].fd < 0)
            break;
        uint64_t t = now_ms();
        if (!killed && t >= deadline) {
            res->timed_out = killed = true;
            cg_run_kill(&host->cg, &cg);
            kill(-pid, SIGKILL);
        }
        if (killed && exited && t >= deadline + 5000)
            break; /* a descriptor held by something the kill could not reach */
        struct pollfd p[2];
        nfds_t np = 0;
        for (int i = 0; i < 2; i++)
            if (sinks[i].fd >= 0)
                p[np++] = (struct pollfd){sinks[i].fd, POLLIN, 0};
        int n = poll(p, np, 20);
        if (n < 0 && errno != EINTR) {
            ev_fail(err, errno, "poll");
            break;
        }
        for (nfds_t k = 0; n > 0 && k < np; k++)
            if (p[k].revents)
                for (int i = 0; i < 2; i++)
                    if (sinks[i].fd == p[k].fd)
                        sink_read(&sinks[i]);
    }
    if (!exited) { /* an error above: never leave the command behind */
        cg_run_kill(&host->cg, &cg);
        kill(-pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        goto out;
    }
    if (!err->msg[0]) {
        if (WIFEXITED(status) && !res->timed_out)
            res->exit_code = WEXITSTATUS(status);
        rc = 0;
    }
out:
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 2; k++)
            if (pipes[i][k] >= 0)
                close(pipes[i][k]);
        if (sinks[i].fd >= 0)
            close(sinks[i].fd);
    }
    if (have_cg) {
        struct ev_err cerr;
        cg_run_kill(&host->cg, &cg);
        if (cg_run_destroy(&host->cg, &cg, &cerr) < 0 &&
            cg_remove_stale(&host->cg, name, &cerr) < 0)
            fprintf(stderr, "envicutor helper: %s\n", cerr.msg);
    }
    if (rc == 0) {
        sinks[0].buf[sinks[0].len] = sinks[1].buf[sinks[1].len] = '\0';
        res->out = sinks[0].buf;
        res->out_len = sinks[0].len;
        res->err = sinks[1].buf;
        res->err_len = sinks[1].len;
    } else {
        free(sinks[0].buf);
        free(sinks[1].buf);
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

static int read_all(int fd, size_t cap, char **out, size_t *len, struct ev_err *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ev_fail(err, errno, "stat the environment");
    if ((uint64_t)st.st_size > cap)
        return ev_fail(err, 0, "the environment is larger than %zu bytes", cap);
    *out = malloc((size_t)st.st_size + 1);
    if (!*out)
        return ev_fail(err, ENOMEM, "environment");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(fd, *out + got, (size_t)st.st_size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(*out);
            *out = NULL;
            return ev_fail(err, n < 0 ? errno : 0, "read the environment");
        }
        got += (size_t)n;
    }
    (*out)[got] = '\0';
    *len = got;
    return 0;
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

int nix_install(const struct sbx_host *host, const char *runtimes_dir, const char *name,
                unsigned timeout_s, struct nix_result *res, struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    char dir[512], shell_nix[600], tool[512], path_var[600];
    snprintf(dir, sizeof(dir), "%s/%s", runtimes_dir, name);
    snprintf(shell_nix, sizeof(shell_nix), "%s/shell.nix", dir);
    struct stat st;
    if (lstat(shell_nix, &st) < 0 || !S_ISREG(st.st_mode))
        return ev_fail(err, 0, "%s is not a regular file", shell_nix);
    if (find_tool("nix-shell", tool, sizeof(tool)) < 0)
        return ev_fail(err, 0, "nix-shell not found");
    char *envp[16];
    nix_env(envp, 16, path_var, sizeof(path_var), tool);
    char *argv[] = {tool, "--pure", shell_nix, "--run", (char *)capture_command, NULL};
    cleanup_close int env_fd = memfd_create("envicutor-nix-env", MFD_CLOEXEC);
    if (env_fd < 0)
        return ev_fail(err, errno, "memfd_create");
    uint64_t t0 = now_ms();
    if (run_tool(host, argv, envp, dir, env_fd, timeout_s, res, err) < 0)
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
    if (read_all(env_fd, NIX_MAX_ENV, &res->env, &res->env_len, err) < 0)
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
        nix_env(envp, 16, path_var, sizeof(path_var), store_tool);
        uint64_t spent = (now_ms() - t0) / 1000;
        unsigned left = spent + 10 < timeout_s ? timeout_s - (unsigned)spent : 10;
        struct nix_result rr;
        int r = run_tool(host, rargv, envp, dir, -1, left, &rr, err);
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

int nix_update(const struct sbx_host *host, unsigned timeout_s, struct nix_result *res,
               struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    char channel[512], nixenv[512], path_var[600];
    if (find_tool("nix-channel", channel, sizeof(channel)) < 0 ||
        find_tool("nix-env", nixenv, sizeof(nixenv)) < 0)
        return ev_fail(err, 0, "nix-channel or nix-env not found");
    char *envp[16];
    nix_env(envp, 16, path_var, sizeof(path_var), channel);
    uint64_t t0 = now_ms();
    char *argv[] = {channel, "--update", NULL};
    if (run_tool(host, argv, envp, "/", -1, timeout_s, res, err) < 0)
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
    if (run_tool(host, argv2, envp, "/", -1, timeout_s - (unsigned)spent, &r2, err) < 0)
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

int nix_gc(const struct sbx_host *host, unsigned timeout_s, struct nix_result *res,
           struct ev_err *err)
{
    memset(res, 0, sizeof(*res));
    char tool[512], path_var[600];
    if (find_tool("nix-store", tool, sizeof(tool)) < 0)
        return ev_fail(err, 0, "nix-store not found");
    char *envp[16];
    nix_env(envp, 16, path_var, sizeof(path_var), tool);
    char *argv[] = {tool, "--gc", NULL};
    if (run_tool(host, argv, envp, "/", -1, timeout_s, res, err) < 0)
        return -1;
    if (res->timed_out)
        add_note(res, "envicutor: the garbage collection timeout expired: nix-store was killed");
    return 0;
}
