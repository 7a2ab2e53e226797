/* `envicutor serve`: the HTTP server of SPEC §4.
 *
 * Start-up, as root: read the configuration, prepare the sandbox host and clean what a killed
 * instance left, bind the port, then split in two. A privileged helper keeps root and does
 * nothing but sandbox operations (privsep/helper.c); the server proper drops to an
 * unprivileged user before it touches the database, JSON or a single HTTP byte, and asks the
 * helper for boxes and runs over a socket pair (privsep/protocol.h). See docs/server.md. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cluster/worker.h"
#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/lazylib.h"
#include "http/auth.h"
#include "http/mhd_loader.h"
#include "http/server.h"
#include "http/submissions_cluster.h"
#include "http/submissions_local.h"
#include "pipeline/catalog.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"
#include "privsep/client.h"
#include "privsep/helper.h"
#include "sandbox/sandbox.h"

static const char usage[] =
    "Usage: envicutor serve\n"
    "\n"
    "Starts the Envicutor HTTP server (must be started as root: it builds sandboxes). The\n"
    "part that parses HTTP and JSON runs as an unprivileged user; a privileged helper process\n"
    "keeps root for the sandbox alone.\n"
    "\n"
    "Configuration, from environment variables (defaults in brackets):\n"
    "  PORT [5000]\n"
    "  COMPILE_WALL_TIME [60] COMPILE_CPU_TIME [30] COMPILE_EXTRA_TIME [5]     seconds\n"
    "  COMPILE_MEMORY [1000000] COMPILE_MAX_FILE_SIZE [100000]                 kilobytes\n"
    "  COMPILE_MAX_OPEN_FILES [512] COMPILE_MAX_NUMBER_OF_PROCESSES [512]\n"
    "  RUN_WALL_TIME [60] RUN_CPU_TIME [30] RUN_EXTRA_TIME [5]                 seconds\n"
    "  RUN_MEMORY [1000000] RUN_MAX_FILE_SIZE [100000]                         kilobytes\n"
    "  RUN_MAX_OPEN_FILES [64] RUN_MAX_NUMBER_OF_PROCESSES [64]\n"
    "  MAX_CONCURRENT_SUBMISSIONS [8]   submissions running at once\n"
    "  MAX_TESTS [1000]                 tests of one judge-mode request\n"
    "  MAX_QUEUE_MEMORY [268435456]     body bytes that waiting requests may hold in memory\n"
    "                                   before the next one is answered 503\n"
    "  MAX_QUEUE_SPILLED [4294967296]   body bytes they may hold in files (bodies over 1 MiB)\n"
    "  MAX_QUEUE_SIZE [no limit]        waiting requests, counted, before answering 503\n"
    "                                   (0: none waits; earlier name: MAX_QUEUED_REQUESTS)\n"
    "  CONNECTION_TIMEOUT [60]          seconds a connection may stay silent\n"
    "  INSTALLATION_TIMEOUT [120] UPDATE_TIMEOUT [240]                         seconds\n"
    "  MAX_REQUEST_SIZE [67108864]      request body bytes before answering 413\n"
    "  MAX_OUTPUT_SIZE [4194304]        stdout and stderr bytes kept per stage\n"
    "  MAX_FILE_SIZE_UPLOAD [268435456] bytes of one file uploaded to POST /files (413 above)\n"
    "  FILE_STORE_SIZE [4294967296]     bytes of all stored files (507 when an upload would\n"
    "                                   go over; files are kept until deleted)\n"
    "  ADMIN_API_KEYS, EXECUTE_API_KEYS [none]  comma-separated API keys; when set, every\n"
    "                                   route but /health needs one (see the README)\n"
    "  BOX_DISK_SIZE [262144] BOX_MAX_FILES [16384]   size (KB) and files of a submission\n"
    "  ENVICUTOR_DATA_DIR [/var/lib/envicutor]  database, runtime store, file store,\n"
    "                                   compile cache\n"
    "  COMPILE_CACHE_SIZE [268435456]   bytes of compile results kept under the data\n"
    "                                   directory (least recently used out; 0: no cache)\n"
    "  ENVICUTOR_RUN_DIR [/run/envicutor]       sandbox boxes and locks\n"
    "  ENVICUTOR_USER [envicutor]       unprivileged user of the server (created if missing)\n"
    "  ENVICUTOR_CATALOG [<binary>/../runtimes/catalog, else <binary>/../share/envicutor/catalog]\n"
    "                                   runtime catalog installed on first start\n"
    "\n"
    "Connections are bounded by the descriptor limit, which the server raises to its hard\n"
    "limit at start (`ulimit -Hn`), less a reserve of 256.\n"
    "\n"
    "  SHUTDOWN_TIMEOUT [30]            seconds running work gets to finish on SIGTERM\n"
    "\n"
    "A cluster (docs/cluster.md): with REDIS_URL=redis://host:port[/db] this server is an API\n"
    "node: it checks /execute requests and queues them in Redis for `envicutor worker`s, which\n"
    "run them; it runs no code itself.\n"
    "  REDIS_URL [none]                 the cluster's Redis\n"
    "  JOB_RECLAIM_SECONDS [30]         a worker silent this long loses its jobs to another\n"
    "  JOB_MAX_ATTEMPTS [3]             runs of one job before it is answered XX\n"
    "\n"
    "SIGTERM or SIGINT stop it gracefully: no new connection is accepted and nothing new\n"
    "starts (waiting requests are answered 503); running submissions get SHUTDOWN_TIMEOUT\n"
    "seconds to finish and be answered, then what still runs is killed and cleaned.\n"
    "Nothing is reloaded while it runs: a change of configuration needs a restart.\n";

static const char worker_usage[] =
    "Usage: envicutor worker\n"
    "\n"
    "Runs the jobs of a cluster (docs/cluster.md): takes /execute requests that API nodes\n"
    "(`envicutor serve` with REDIS_URL) put in Redis, up to MAX_CONCURRENT_SUBMISSIONS at once,\n"
    "and writes their answers back. Started as root like serve, with the same variables\n"
    "('envicutor serve --help'); REDIS_URL is required, PORT is not used. The runtimes are\n"
    "the registry's in Redis (POST /runtimes on an API node), installed into its own\n"
    "ENVICUTOR_DATA_DIR before it takes a job.\n";

/* "serve" or "worker", for messages */
static const char *command = "serve";

static __attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "envicutor %s: ", command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

/* The unprivileged identity: ENVICUTOR_USER, created as a system user when it is the default
 * one and does not exist yet. */
static int find_user(const char *name, uid_t *uid, gid_t *gid, struct ev_err *err)
{
    struct passwd *pw = getpwnam(name);
    if (!pw && strcmp(name, "envicutor") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            char *argv[] = {"useradd",      "--system", "--no-create-home",  "--home-dir",
                            "/nonexistent", "--shell",  "/usr/sbin/nologin", "--user-group",
                            "envicutor",    NULL};
            char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
            execve("/usr/sbin/useradd", argv, envp);
            _exit(127);
        }
        int st = 0;
        while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return ev_fail(err, 0, "could not create the system user %s with useradd", name);
        pw = getpwnam(name);
    }
    if (!pw)
        return ev_fail(err, 0, "ENVICUTOR_USER: no user named '%s'", name);
    if (pw->pw_uid == 0 || (pw->pw_uid >= 60000 && pw->pw_uid < 61000))
        return ev_fail(err, 0,
                       "ENVICUTOR_USER: '%s' must be an unprivileged user outside the "
                       "box range 60000-60999",
                       name);
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

/* Hands one entry of the data directory to the unprivileged user. The directory is that user's,
 * who may have planted anything at these names before this start: a hard link to a host file
 * (with fs.protected_hardlinks=0, the kernel's default, anyone may link to a file they do not
 * own), a symbolic link, a FIFO. The entry is opened relative to the directory's descriptor
 * without following links and checked through its own descriptor, so the inode checked is the
 * inode changed: its type, a single link for a file, and an owner that is root or the user.
 * Anything else stops the start, for the deployer to look at. */
static int hand_over(int dfd, const char *dir, const char *name, bool is_dir, uid_t uid, gid_t gid,
                     struct ev_err *err)
{
    cleanup_close int fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return ev_fail(err, errno, "ENVICUTOR_DATA_DIR: open %s/%s", dir, name);
    const char *why = NULL;
    if (S_ISLNK(st.st_mode))
        why = "is a symbolic link";
    else if (is_dir && !S_ISDIR(st.st_mode))
        why = "is not a directory";
    else if (!is_dir && !S_ISREG(st.st_mode))
        why = "is not a regular file";
    else if (!is_dir && st.st_nlink != 1)
        why = "has more than one hard link (it may be a link to a file elsewhere)";
    else if (st.st_uid != 0 && st.st_uid != uid)
        why = "belongs to neither root nor the server's user";
    if (why)
        return ev_fail(err, 0,
                       "ENVICUTOR_DATA_DIR: %s/%s %s; not starting (move it away if it is not "
                       "the server's)",
                       dir, name, why);
    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
        return ev_fail(err, errno, "ENVICUTOR_DATA_DIR: chown %s/%s", dir, name);
    return 0;
}

static int prepare_data_dir(const char *dir, uid_t uid, gid_t gid, struct ev_err *err)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return ev_fail(err, errno, "ENVICUTOR_DATA_DIR: mkdir %s", dir);
    /* Its parent is the deployer's; the directory itself may have been swapped for a link by
     * its owner (in a sticky /tmp, say), so it is not followed either. */
    cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 && (errno == ELOOP || errno == ENOTDIR))
        return ev_fail(err, 0, "ENVICUTOR_DATA_DIR: %s is a symbolic link or not a directory", dir);
    if (dfd < 0 || fstat(dfd, &st) < 0)
        return ev_fail(err, errno, "ENVICUTOR_DATA_DIR: open %s", dir);
    if (st.st_uid != 0 && st.st_uid != uid)
        return ev_fail(err, 0,
                       "ENVICUTOR_DATA_DIR: %s belongs to neither root nor the server's user", dir);
    /* the database must not be readable by anyone else */
    if (fchown(dfd, uid, gid) < 0 || fchmod(dfd, 0700) < 0)
        return ev_fail(err, errno, "ENVICUTOR_DATA_DIR: chown and chmod %s", dir);
    const char *files[] = {"envicutor.db", "envicutor.db-wal", "envicutor.db-shm"};
    if (hand_over(dfd, dir, "runtimes", true, uid, gid, err) < 0 ||
        hand_over(dfd, dir, "files", true, uid, gid, err) < 0 ||
        hand_over(dfd, dir, "compile-cache", true, uid, gid, err) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (hand_over(dfd, dir, files[i], false, uid, gid, err) < 0)
            return -1;
    return 0;
}

static int listen_on(unsigned port, struct ev_err *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ev_fail(err, errno, "socket");
    int one = 1;
    /* without it a restart could not listen while the last run's connections linger */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        int e = errno;
        close(fd);
        return ev_fail(err, e, "PORT: SO_REUSEADDR on port %u", port);
    }
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 65535) < 0) {
        int e = errno;
        close(fd);
        return ev_fail(err, e, "PORT: listen on port %u", port);
    }
    return fd;
}

static int catalog_dir(char *buf, size_t size, struct ev_err *err)
{
    const char *env = getenv("ENVICUTOR_CATALOG");
    if (env) {
        if (strlen(env) >= size)
            return ev_fail(err, 0, "ENVICUTOR_CATALOG is longer than %zu bytes", size - 1);
        snprintf(buf, size, "%s", env);
        return 0;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0) {
        snprintf(buf, size, "runtimes/catalog");
        return 0;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    /* build/envicutor (or build-asan/envicutor) in the repository; else an installed binary,
     * PREFIX/bin/envicutor, whose catalog `make install` put in PREFIX/share */
    if ((size_t)snprintf(buf, size, "%s/../runtimes/catalog", exe) >= size)
        return ev_fail(err, 0, "the catalog beside %s: the path is longer than %zu bytes", exe,
                       size - 1);
    struct stat st;
    if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    if ((size_t)snprintf(buf, size, "%s/../share/envicutor/catalog", exe) >= size)
        return ev_fail(err, 0, "the catalog beside %s: the path is longer than %zu bytes", exe,
                       size - 1);
    return 0;
}

static int drop_privileges(uid_t uid, gid_t gid, struct ev_err *err)
{
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
        return ev_fail(err, errno, "drop privileges to uid %u", (unsigned)uid);
    if (setuid(0) == 0)
        return ev_fail(err, 0, "privileges could be regained after dropping them");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return ev_fail(err, errno, "no_new_privs");
    return 0;
}

/* SIGTERM: no new connection is accepted and nothing new starts (what waits in the queue is
 * answered 503), what runs gets until the deadline to finish and be answered; what still runs
 * then is killed by the caller's pipeline_stop, and its answer gets a moment to go out. */
static void shut_down_gently(struct http_server *http, struct pipeline *pipeline,
                             uint64_t timeout_s)
{
    uint64_t deadline = monotonic_ns() + timeout_s * 1000000000ull;
    http_quiesce(http);
    if (!pipeline_drain(pipeline, deadline)) {
        fprintf(stderr,
                "envicutor: work still running after SHUTDOWN_TIMEOUT (%llu s); killing it\n",
                (unsigned long long)timeout_s);
        pipeline_stop(pipeline);
        deadline = monotonic_ns() + 2000000000ull;
    }
    if (!http_wait_answered(http, deadline))
        fprintf(stderr, "envicutor: some answers were not sent before the deadline\n");
}

struct worker_thread {
    struct pipeline *pipeline;
    const struct ev_config *cfg;
    atomic_bool stop;
    pthread_t th;
    int status;
};

static void *worker_thread_main(void *arg)
{
    struct worker_thread *wt = arg;
    struct ev_err err;
    wt->status = worker_run(wt->pipeline, wt->cfg, &wt->stop, &err);
    if (wt->status < 0)
        fprintf(stderr, "envicutor worker: %s\n", err.msg);
    return NULL;
}

/* serve and worker: the same start-up (root, the helper, the privilege drop, the pipeline);
 * a worker listens on no port and takes its work from Redis instead of HTTP. */
static int serve_or_work(int argc, char **argv, bool worker)
{
    command = worker ? "worker" : "serve";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(worker ? worker_usage : usage, stdout);
            return 0;
        }
        fprintf(stderr, "envicutor %s: unknown argument '%s'\nTry 'envicutor %s --help'.\n",
                command, argv[i], command);
        return 2;
    }
    static struct ev_config cfg;
    struct ev_err err = {0};
    if (config_load(&cfg, env_lookup, &err) < 0) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        return 2;
    }
    if (worker && !cfg.redis_url[0]) {
        fprintf(stderr, "envicutor worker: REDIS_URL is required (redis://host:port[/db])\n");
        return 2;
    }
    static struct auth_keys keys;
    if (auth_load(&keys, env_lookup, &err) < 0) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        return 2;
    }
    /* the libraries loaded on first use (common/lazylib.h), checked now so that a missing one
     * is reported at start rather than by an abort at its first call */
    if (mhd_load(&err) < 0 || sqlite_load(&err) < 0 || wslay_load(&err) < 0 ||
        (cfg.redis_url[0] && hiredis_load(&err) < 0)) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        return 1;
    }
    /* Only digests are kept; the keys leave the environment so nothing started later (the
     * helper, a tool) inherits them. */
    unsetenv("ADMIN_API_KEYS");
    unsetenv("EXECUTE_API_KEYS");
    if (geteuid() != 0)
        die("%s", "must be started as root: it builds sandboxes (namespaces, cgroups, mounts). "
                  "It drops root for everything but the sandbox; see 'envicutor serve --help'.");

    static struct sbx_host host;
    struct sbx_host_config hcfg = {.run_dir = getenv("ENVICUTOR_RUN_DIR"), .log = ev_log_stderr};
    if (sbx_host_init(&host, &hcfg, &err) < 0)
        die("%s", err.msg);
    int stale = sbx_cleanup_stale(&host, &err);
    if (stale < 0)
        die("cleaning boxes left by a previous instance: %s", err.msg);

    uid_t uid = 0;
    gid_t gid = 0;
    if (find_user(cfg.user, &uid, &gid, &err) < 0 ||
        prepare_data_dir(cfg.data_dir, uid, gid, &err) < 0)
        die("%s", err.msg);
    char cat_dir[512];
    if (catalog_dir(cat_dir, sizeof(cat_dir), &err) < 0)
        die("%s", err.msg);
    struct catalog_entry *catalog = NULL;
    size_t n_catalog = 0;
    if (catalog_load(cat_dir, &catalog, &n_catalog, &err) < 0)
        die("%s", err.msg);
    int lfd = worker ? -1 : listen_on(cfg.port, &err);
    if (!worker && lfd < 0)
        die("%s", err.msg);

    char runtimes_dir[300];
    snprintf(runtimes_dir, sizeof(runtimes_dir), "%s/runtimes", cfg.data_dir);
    /* this binary's path (through readlink rather than /proc/self/exe at exec time, which
     * would be a memory checker's own binary when one runs the server) */
    char self_exe[4096];
    ssize_t exe_len = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (exe_len <= 0)
        die("readlink /proc/self/exe: %s", strerror(errno));
    self_exe[exe_len] = '\0';
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    fflush(stderr);
    pid_t helper = fork();
    if (helper < 0)
        die("fork the helper: %s", strerror(errno));
    if (helper == 0) {
        /* The helper starts from a fresh image of this binary rather than as a copy of the
         * server: it holds nothing of the server's memory (the catalog, the configuration,
         * the API key digests), and a memory checker run on the server does not end up
         * emulating the sandbox. Its socket is descriptor 3. */
        if (dup2(sv[1], HELPER_FD) < 0)
            _exit(127);
        char *const hargv[] = {"envicutor", HELPER_COMMAND, runtimes_dir, NULL};
        execv(self_exe, hargv);
        fprintf(stderr, "envicutor serve: start the helper: %s\n", strerror(errno));
        _exit(127);
    }
    close(sv[1]);
    sbx_host_free(&host);

    /* Signals are taken synchronously by the main thread; every thread started from here on
     * inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    struct store *store = NULL;
    struct psc *psc = NULL;
    static struct pipeline pipeline;
    static struct http_server http;
    static struct worker_thread wt;
    bool worker_started = false;
    bool pipeline_ready = false, files_ready = false;
    struct submissions *subs = NULL;
    struct local_runner *async_runner = NULL;
    struct cluster_runner *cluster_runner = NULL;
    if (drop_privileges(uid, gid, &err) < 0) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        goto out;
    }
    store = store_open(cfg.data_dir, &err);
    if (!store) {
        fprintf(stderr,
                "envicutor serve: %s (the data directory and its parents must be "
                "reachable by the user %s)\n",
                err.msg, cfg.user);
        goto out;
    }
    int swept = store_sweep(store, &err);
    if (swept < 0) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        goto out;
    }
    if (swept)
        fprintf(stderr, "envicutor: removed %d unfinished runtime directories\n", swept);
    static struct file_store files;
    if (file_store_init(&files, cfg.data_dir, cfg.max_file_upload, cfg.file_store_bytes, &err) <
        0) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        goto out;
    }
    files_ready = true;
    psc = psc_start(sv[0], &err);
    if (!psc) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        goto out;
    }
    sv[0] = -1;
    pipeline_init(&pipeline, &cfg, psc, store);
    pipeline.files = &files;
    pipeline_ready = true;
    if (pipeline_open_cache(&pipeline, &err) < 0) {
        fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
        goto out;
    }
    if (catalog_install(&pipeline, catalog, n_catalog, &err) < 0)
        fprintf(stderr, "envicutor: the runtime catalog was not installed: %s\n", err.msg);
    catalog_free(catalog, n_catalog);
    catalog = NULL;
    n_catalog = 0;
    if (worker) {
        wt = (struct worker_thread){.pipeline = &pipeline, .cfg = &cfg};
        int e = pthread_create(&wt.th, NULL, worker_thread_main, &wt);
        if (e) {
            fprintf(stderr, "envicutor worker: start the worker: %s\n", strerror(e));
            goto out;
        }
        worker_started = true;
        fprintf(stderr, "envicutor: worker started (uid %u, helper pid %d)\n", (unsigned)uid,
                (int)helper);
    } else {
        subs = subs_open(&cfg, &err);
        if (!subs) {
            fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
            goto out;
        }
        /* An API node runs no code: its submissions go to the cluster's workers, through the
         * queue its /execute uses, made here so that both have it from the first request. */
        if (cfg.redis_url[0]) {
            http.cluster = cluster_api_start(&cfg, &err);
            if (!http.cluster ||
                !(cluster_runner = cluster_runner_start(subs, http.cluster, &err))) {
                fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
                goto out;
            }
        } else if (!(async_runner = local_runner_start(subs, &pipeline, &cfg, &err))) {
            fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
            goto out;
        }
        if (subs_start(subs, &err) < 0) {
            fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
            goto out;
        }
        http.auth = &keys;
        http.subs = subs;
        if (http_start(&http, lfd, &pipeline, &cfg, &err) < 0) {
            fprintf(stderr, "envicutor %s: %s\n", command, err.msg);
            goto out;
        }
        lfd = -1; /* the server owns it now */
        fprintf(stderr, "envicutor: listening on port %u (server uid %u, helper pid %d)\n",
                cfg.port, (unsigned)uid, (int)helper);
    }

    bool graceful = false;
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGCHLD) {
            int st;
            pid_t r = waitpid(helper, &st, WNOHANG);
            if (r == helper) {
                fprintf(stderr, "envicutor: the privileged helper exited; stopping\n");
                helper = -1;
                break;
            }
            continue;
        }
        fprintf(stderr, "envicutor: %s received, stopping\n", strsignal(sig));
        status = 0;
        graceful = true;
        break;
    }
    if (worker_started) {
        /* no new job is taken; what runs gets SHUTDOWN_TIMEOUT, then is killed and left
         * unacknowledged, for another worker */
        atomic_store(&wt.stop, true);
        if (!graceful ||
            !pipeline_drain(&pipeline, monotonic_ns() + cfg.shutdown_timeout * 1000000000ull))
            pipeline_stop(&pipeline);
        pthread_join(wt.th, NULL);
        pipeline_stop(&pipeline);
    } else {
        if (graceful)
            shut_down_gently(&http, &pipeline, cfg.shutdown_timeout);
        /* submissions out in the cluster get SHUTDOWN_TIMEOUT to come back; the rest are
         * withdrawn and recorded as stopped, before http_stop stops the cluster's side */
        if (graceful && !cluster_runner_drain(
                            cluster_runner, monotonic_ns() + cfg.shutdown_timeout * 1000000000ull))
            fprintf(stderr, "envicutor: submissions still out in the cluster after "
                            "SHUTDOWN_TIMEOUT; withdrawing them\n");
        cluster_runner_stop(cluster_runner);
        cluster_runner = NULL;
        pipeline_stop(&pipeline);
        http_stop(&http);
    }
out:
    /* a start that failed: the cluster's side was not handed to a running server */
    cluster_runner_stop(cluster_runner);
    if (http.cluster && !http.daemon) {
        cluster_api_stop(http.cluster);
        http.cluster = NULL;
    }
    /* after the pipeline's stop: the async workers record what was refused or cut short */
    if (async_runner)
        pipeline_stop(&pipeline);
    local_runner_stop(async_runner);
    subs_close(subs);
    if (lfd >= 0)
        close(lfd);
    catalog_free(catalog, n_catalog);
    if (psc)
        psc_stop(psc); /* the helper sees end of file, kills every run, closes every box */
    else if (sv[0] >= 0)
        close(sv[0]);
    if (helper > 0) {
        int st;
        while (waitpid(helper, &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            status = 1;
    }
    if (pipeline_ready)
        pipeline_destroy(&pipeline);
    store_close(store);
    if (files_ready)
        file_store_close(&files);
    fprintf(stderr, "envicutor: stopped\n");
    return status;
}

int cmd_serve(int argc, char **argv)
{
    return serve_or_work(argc, argv, false);
}

int cmd_worker(int argc, char **argv)
{
    return serve_or_work(argc, argv, true);
}
