/* `envicutor catalog check DIR [--server URL]`: validates a runtime catalog (docs/catalog.md),
 * installs each entry into a server and runs its sample, then prints a table. The server is a
 * scratch one this command starts (the same binary's `serve`, a data directory of its own, a
 * free port) unless --server names one. Exit status 0 when every sample printed its expected
 * output; 1 on any invalid entry, failed installation or mismatch; 2 for a bad command line. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/http_client.h"
#include "common/cleanup.h"
#include "common/rmtree.h"
#include "pipeline/catalog.h"
#include "pipeline/config.h"

static const char usage[] =
    "Usage: envicutor catalog check DIR [--server URL]\n"
    "\n"
    "Validates every DIR/*.json runtime catalog entry (an error names the file and the field),\n"
    "installs each entry into a server, runs its sample and compares the output with the\n"
    "expected one. Prints a table (language, status, compile time, run time, peak memory);\n"
    "exits 1 when any entry is invalid, fails to install or prints something else.\n"
    "\n"
    "  --server URL   use the server at URL (http://HOST:PORT) instead of a scratch one; entries\n"
    "                 it has already (by name) are run as installed, the others are added and\n"
    "                 left there. ENVICUTOR_API_KEY, when set, is sent as its admin key.\n"
    "\n"
    "Without --server the command starts a scratch server (this binary's `serve`, as root: it\n"
    "needs the sandbox) on a free port of 127.0.0.1 with a temporary data directory, and\n"
    "removes both at the end. The server's limits come from the environment as usual\n"
    "(docs/server.md), except that a limit an entry sets higher than the server's and the\n"
    "environment does not name (R's RUN_MAX_OPEN_FILES) is raised to the entry's.\n";

#define HTTP_TIMEOUT_S 900 /* an installation or a compile of the slowest toolchains */

struct scratch {
    pid_t pid;
    char dir[64]; /* holds data/ and server.log */
};

static int free_port(struct ev_err *err)
{
    cleanup_close int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ev_fail(err, errno, "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return ev_fail(err, errno, "choosing a free port");
    return ntohs(a.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

/* The scratch server exists for the catalog: a limit some entry sets above what the server
 * would allow (R's 256 descriptors against the default 64) is raised to it, unless the
 * environment names that limit, in which case the environment holds and the entry is reported
 * as not installed. Set in this process's environment, which the server inherits. */
static int scratch_limits(const struct catalog_entry *entries, size_t n, struct ev_err *err)
{
    struct ev_config cfg;
    if (config_load(&cfg, env_lookup, err) < 0)
        return ev_wrap(err, "the scratch server's configuration: ");
    for (int stage = 0; stage < 2; stage++) {
        uint64_t server[LIM_COUNT];
        limits_to_array(stage ? &cfg.run : &cfg.compile, server);
        for (int i = 0; i < LIM_COUNT; i++) {
            uint64_t want = server[i];
            for (size_t k = 0; k < n; k++) {
                const struct limit_override *o =
                    stage ? &entries[k].rt.run_limits : &entries[k].rt.compile_limits;
                if (o->present[i] && o->value[i] > want)
                    want = o->value[i];
            }
            char name[64], value[32];
            int len =
                snprintf(name, sizeof(name), "%s_%s", stage ? "RUN" : "COMPILE", limit_names[i]);
            for (int c = 0; c < len; c++)
                name[c] = (char)toupper((unsigned char)name[c]);
            if (want == server[i] || getenv(name))
                continue;
            bool seconds = i == LIM_WALL_TIME || i == LIM_CPU_TIME || i == LIM_EXTRA_TIME;
            if (seconds)
                snprintf(value, sizeof(value), "%llu.%06llu", (unsigned long long)(want / 1000000),
                         (unsigned long long)(want % 1000000));
            else
                snprintf(value, sizeof(value), "%llu", (unsigned long long)want);
            if (setenv(name, value, 1) < 0)
                return ev_fail(err, errno, "setenv %s", name);
        }
    }
    return 0;
}

static int scratch_start(struct scratch *s, const struct catalog_entry *entries, size_t n_entries,
                         struct http_target *t, struct ev_err *err)
{
    if (geteuid() != 0)
        return ev_fail(err, 0,
                       "a scratch server needs root (the sandbox does); run as root or "
                       "give --server URL");
    char exe[512];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0)
        return ev_fail(err, errno, "readlink /proc/self/exe");
    exe[n] = '\0';
    int port = free_port(err);
    if (port < 0 || scratch_limits(entries, n_entries, err) < 0)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/envicutor-check-XXXXXX");
    if (!mkdtemp(s->dir))
        return ev_fail(err, errno, "mkdtemp %s", s->dir);
    /* The server's unprivileged user must reach the data directory below. */
    char data[128], log[128], none[128], port_s[16];
    snprintf(data, sizeof(data), "%s/data", s->dir);
    snprintf(log, sizeof(log), "%s/server.log", s->dir);
    snprintf(none, sizeof(none), "%s/no-catalog", s->dir);
    snprintf(port_s, sizeof(port_s), "%d", port);
    if (chmod(s->dir, 0711) < 0 || mkdir(data, 0700) < 0)
        return ev_fail(err, errno, "preparing %s", s->dir);
    cleanup_close int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return ev_fail(err, errno, "open %s", log);
    s->pid = fork();
    if (s->pid < 0)
        return ev_fail(err, errno, "fork");
    if (s->pid == 0) {
        /* The entries are installed one by one through the API, so that each installation's
         * failure comes back with its message: the server installs no catalog of its own. */
        if (setenv("PORT", port_s, 1) < 0 || setenv("ENVICUTOR_DATA_DIR", data, 1) < 0 ||
            setenv("ENVICUTOR_CATALOG", none, 1) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
            _exit(127);
        execl(exe, exe, "serve", (char *)NULL);
        _exit(127);
    }
    snprintf(t->host, sizeof(t->host), "127.0.0.1");
    snprintf(t->port, sizeof(t->port), "%d", port);
    for (int i = 0; i < 1200; i++) {
        int st;
        pid_t w = waitpid(s->pid, &st, WNOHANG);
        if (w == s->pid) {
            s->pid = 0;
            return ev_fail(err, 0, "the scratch server exited at start-up (its log: %s)", log);
        }
        char *resp = NULL;
        int status = 0;
        struct ev_err ignored;
        if (http_call(t, "GET", "/health", NULL, 5, &status, &resp, &ignored) == 0) {
            free(resp);
            if (status == 200)
                return 0;
        }
        sleep_ms(50);
    }
    return ev_fail(err, 0, "the scratch server did not answer within 60 s (its log: %s)", log);
}

static void scratch_stop(struct scratch *s, bool keep_dir)
{
    if (s->pid > 0) {
        int st;
        if (kill(s->pid, SIGTERM) < 0)
            perror("envicutor catalog: stopping the scratch server");
        while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR) {
        }
        s->pid = 0;
    }
    struct ev_err err;
    if (s->dir[0] && !keep_dir && rmtree_at(AT_FDCWD, s->dir, &err) < 0)
        fprintf(stderr, "envicutor catalog: %s\n", err.msg);
}

/* The id under which the server has a runtime of this name, 0 when none, -1 on failure. */
static long long find_runtime(const struct http_target *t, const char *name, struct ev_err *err)
{
    char *resp;
    int status;
    if (http_call(t, "GET", "/runtimes", NULL, 60, &status, &resp, err) < 0)
        return -1;
    json_t *list = json_loads(resp, 0, NULL);
    free(resp);
    if (status != 200 || !json_is_array(list)) {
        json_decref(list);
        return ev_fail(err, 0, "GET /runtimes: status %d", status);
    }
    long long id = 0;
    size_t i;
    json_t *r;
    json_array_foreach(list, i, r)
    {
        const char *n = json_string_value(json_object_get(r, "name"));
        if (n && strcmp(n, name) == 0)
            id = json_integer_value(json_object_get(r, "id"));
    }
    json_decref(list);
    return id;
}

/* POST /runtimes with the entry's own fields, as the file spells them. */
static int install(const struct http_target *t, const char *dir, const struct catalog_entry *e,
                   struct ev_err *err)
{
    static const char *const fields[] = {"name", "source_file_name", "compile_script", "run_script",
                                         "env",  "compile_limits",   "run_limits",     NULL};
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, e->file);
    json_t *file = json_load_file(path, 0, NULL);
    json_t *body = json_pack("{s:s,s:s}", "provider", "host", "nix_shell", "");
    for (size_t i = 0; file && body && fields[i]; i++) {
        json_t *v = json_object_get(file, fields[i]);
        if (v)
            json_object_set(body, fields[i], v);
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(file);
    json_decref(body);
    if (!text)
        return ev_fail(err, 0, "%s: read again to install it", path);
    char *resp;
    int status;
    int rc = http_call(t, "POST", "/runtimes", text, HTTP_TIMEOUT_S, &status, &resp, err);
    free(text);
    if (rc < 0)
        return -1;
    if (status != 200) {
        json_t *j = json_loads(resp, 0, NULL);
        const char *m = json_string_value(json_object_get(j, "message"));
        ev_fail(err, 0, "installation failed (%d): %.300s", status, m ? m : resp);
        json_decref(j);
        free(resp);
        return -1;
    }
    free(resp);
    return 0;
}

struct outcome {
    const char *status; /* "ok" or what went wrong */
    double compile_s, run_s;
    long long memory_kb;
    char detail[600];
};

static void judge_answer(const struct catalog_entry *e, json_t *j, struct outcome *o)
{
    json_t *c = json_object_get(j, "compile"), *r = json_object_get(j, "run");
    if (json_is_object(c)) {
        o->compile_s = json_number_value(json_object_get(c, "wall_time"));
        if (!json_is_null(json_object_get(c, "exit_status"))) {
            o->status = "compile error";
            snprintf(o->detail, sizeof(o->detail), "%s: %.500s",
                     json_string_value(json_object_get(c, "exit_status")),
                     json_string_value(json_object_get(c, "stderr")));
            return;
        }
    }
    if (!json_is_object(r)) {
        o->status = "no run";
        return;
    }
    o->run_s = json_number_value(json_object_get(r, "wall_time"));
    o->memory_kb = (long long)json_number_value(json_object_get(r, "memory"));
    const char *out = json_string_value(json_object_get(r, "stdout"));
    if (!json_is_null(json_object_get(r, "exit_status"))) {
        o->status = "run error";
        snprintf(o->detail, sizeof(o->detail), "%s (%s): %.400s",
                 json_string_value(json_object_get(r, "exit_status")),
                 json_string_value(json_object_get(r, "exit_message")),
                 json_string_value(json_object_get(r, "stderr")));
    } else if (!out || strcmp(out, e->sample.expected_output) != 0) {
        o->status = "wrong output";
        snprintf(o->detail, sizeof(o->detail), "expected %.250s, got %.250s",
                 e->sample.expected_output, out ? out : "(none)");
    } else {
        o->status = "ok";
    }
}

static void check_entry(const struct http_target *t, const char *dir, const struct catalog_entry *e,
                        struct outcome *o)
{
    struct ev_err err;
    memset(o, 0, sizeof(*o));
    o->status = "install failed";
    long long id = find_runtime(t, e->rt.name, &err);
    if (id == 0 && (install(t, dir, e, &err) < 0 || (id = find_runtime(t, e->rt.name, &err)) <= 0))
        id = -1;
    if (id < 0) {
        snprintf(o->detail, sizeof(o->detail), "%s", id == -1 ? err.msg : "not listed");
        return;
    }
    json_t *body = json_pack("{s:I,s:s,s:s}", "runtime_id", (json_int_t)id, "source_code",
                             e->sample.source_code, "input", e->sample.input);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    char *resp = NULL;
    int status = 0;
    o->status = "request failed";
    if (!text || http_call(t, "POST", "/execute", text, HTTP_TIMEOUT_S, &status, &resp, &err) < 0) {
        snprintf(o->detail, sizeof(o->detail), "%s", text ? err.msg : "out of memory");
        free(text);
        return;
    }
    free(text);
    json_t *j = json_loads(resp, 0, NULL);
    if (status != 200 || !json_is_object(j))
        snprintf(o->detail, sizeof(o->detail), "POST /execute: %d %.400s", status, resp);
    else
        judge_answer(e, j, o);
    json_decref(j);
    free(resp);
}

/* Every file is read, so one run reports every invalid entry; two entries of one name are an
 * error too (the second could never be installed). */
static int load_all(const char *dir, struct catalog_entry **out, size_t *n)
{
    char **names;
    size_t k;
    struct ev_err err;
    *out = NULL;
    *n = 0;
    if (catalog_list(dir, &names, &k, &err) < 0) {
        fprintf(stderr, "envicutor catalog: %s\n", err.msg);
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || k == 0) {
        fprintf(stderr, "envicutor catalog: %s: no *.json entries\n", dir);
        catalog_list_free(names, k);
        return -1;
    }
    struct catalog_entry *entries = calloc(k, sizeof(*entries));
    if (!entries) {
        catalog_list_free(names, k);
        return -1;
    }
    int bad = 0;
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (catalog_load_entry(dir, names[i], &entries[m], &err) < 0) {
            fprintf(stderr, "invalid: %s\n", err.msg);
            bad = 1;
            continue;
        }
        for (size_t j = 0; j < m; j++)
            if (strcmp(entries[j].rt.name, entries[m].rt.name) == 0) {
                fprintf(stderr, "invalid: %s/%s: field 'name': \"%s\" is also the name in %s\n",
                        dir, names[i], entries[m].rt.name, entries[j].file);
                bad = 1;
            }
        m++;
    }
    catalog_list_free(names, k);
    *out = entries;
    *n = m;
    return bad ? -1 : 0;
}

static int check(const char *dir, const char *server_url)
{
    struct catalog_entry *entries;
    size_t n;
    if (load_all(dir, &entries, &n) < 0) {
        catalog_free(entries, n);
        return 1;
    }
    struct http_target t = {0};
    struct scratch s = {0};
    struct ev_err err;
    int rc =
        server_url ? http_parse_url(server_url, &t, &err) : scratch_start(&s, entries, n, &t, &err);
    if (rc < 0) {
        fprintf(stderr, "envicutor catalog: %s\n", err.msg);
        scratch_stop(&s, true);
        catalog_free(entries, n);
        return 1;
    }
    t.token = getenv("ENVICUTOR_API_KEY");
    int failed = 0;
    printf("%-20s %-22s %-14s %10s %10s %12s\n", "LANGUAGE", "FILE", "STATUS", "COMPILE s", "RUN s",
           "MEMORY KB");
    fflush(stdout);
    for (size_t i = 0; i < n; i++) {
        struct outcome o;
        check_entry(&t, dir, &entries[i], &o);
        printf("%-20s %-22s %-14s %10.3f %10.3f %12lld\n", entries[i].rt.name, entries[i].file,
               o.status, o.compile_s, o.run_s, o.memory_kb);
        if (strcmp(o.status, "ok") != 0) {
            printf("  %s: %s\n", entries[i].file, o.detail);
            failed++;
        }
        fflush(stdout);
    }
    printf("%zu entries, %d failed\n", n, failed);
    /* A failed check keeps the scratch server's log for whoever reads the failure. */
    if (failed && !server_url)
        printf("the scratch server's log: %s/server.log\n", s.dir);
    scratch_stop(&s, failed > 0);
    catalog_free(entries, n);
    return failed ? 1 : 0;
}

/* One option of `catalog`: -1 when taken (--server), else the command's exit status (after
 * --help, 0; after an unknown option, 2). */
static int take_option(int opt, const char **server)
{
    if (opt == 's') {
        *server = optarg;
        return -1;
    }
    fputs(usage, opt == 'h' ? stdout : stderr);
    return opt == 'h' ? 0 : 2;
}

int cmd_catalog(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *server = NULL;
    int opt;
    optind = 1;
    int rc;
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1)
        if ((rc = take_option(opt, &server)) >= 0)
            return rc;
    /* The subcommand, then options anywhere after it. */
    if (optind >= argc || strcmp(argv[optind], "check") != 0) {
        fputs(usage, stderr);
        return 2;
    }
    const char *dir = NULL;
    optind++;
    while (optind < argc) {
        if ((opt = getopt_long(argc, argv, "h", opts, NULL)) == -1) {
            if (dir) {
                fputs(usage, stderr);
                return 2;
            }
            dir = argv[optind++];
        } else if ((rc = take_option(opt, &server)) >= 0) {
            return rc;
        }
    }
    if (!dir) {
        fputs(usage, stderr);
        return 2;
    }
    return check(dir, server);
}
