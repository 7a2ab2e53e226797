#include "pipeline/pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/path.h"
#include "pipeline/file_store.h"
#include "common/sha256.h"
#include "pipeline/compile_cache.h"
#include "common/request_id.h"
#include "pipeline/pipeline_metrics.h"
#include "pipeline/stages.h"

/* The archive of a project is written under this name, extracted and removed by the extract
 * stage. unzip's status 1 means "warnings, but everything was extracted" (a stripped absolute
 * path, for example) and counts as success. The script is fixed text: nothing of the request
 * is ever part of a command line. */
#define ARCHIVE_NAME ".envicutor-project.zip"
static const char extract_script[] =
    "unzip -qq -o /box/" ARCHIVE_NAME " -d /box; s=$?; rm -f /box/" ARCHIVE_NAME "; "
    "if [ $s -eq 1 ]; then s=0; fi; exit $s";

/* The compile cache keeps the box's files after a compile as a tar archive. Both ends run in
 * the box, as its user, under the sandbox's limits: the server never reads the archive's
 * structure, and the helper never parses an archive as root. The save writes the archive to
 * stdout (in name order, so that identical boxes give identical archives); the restore leaves
 * the existing /box's owner and mode alone (--no-overwrite-dir), the box user not owning it. */
#define CACHE_ARCHIVE ".envicutor-cache.tar"
/* The archive passes through the helper's memory and the server's, as a stage's output does:
 * a box whose archive is larger than this is not kept, so that a submission never holds much
 * more memory than its outputs may take. */
#define CACHE_MAX_ARCHIVE (64ull << 20)
static const char cache_save_script[] = "tar --sort=name --numeric-owner -C /box -cf - .";
static const char cache_restore_script[] =
    "tar -xpf /box/" CACHE_ARCHIVE " -C /box --no-overwrite-dir; s=$?; rm -f /box/" CACHE_ARCHIVE
    "; exit $s";

/* The set-up of a host runtime: its scripts must at least be valid bash. */
static const char setup_script[] = "bash -n /runtime/compile.sh && bash -n /runtime/run.sh && "
                                   "echo 'scripts checked: bash syntax ok'";

void pipeline_init(struct pipeline *p, const struct ev_config *cfg, struct psc *psc,
                   struct store *store)
{
    p->cfg = cfg;
    p->psc = psc;
    p->store = store;
    p->files = NULL;
    p->cache = NULL;
    struct sched_bounds b = {cfg->max_queue, cfg->max_queue_memory, cfg->max_queue_spilled};
    sched_init(&p->sched, cfg->max_concurrent, &b);
    atomic_store(&p->stopping, false);
}

int pipeline_open_cache(struct pipeline *p, struct ev_err *err)
{
    if (!p->cfg->compile_cache_bytes)
        return 0;
    p->cache = ccache_open(p->cfg->data_dir, store_runtimes_dir(p->store),
                           p->cfg->compile_cache_bytes, err);
    return p->cache ? 0 : -1;
}

static _Thread_local char thread_request_id[REQUEST_ID_MAX + 1];

void pipeline_set_request_id(const char *request_id)
{
    if (request_id && request_id_valid(request_id))
        snprintf(thread_request_id, sizeof(thread_request_id), "%s", request_id);
    else
        thread_request_id[0] = '\0';
}

void pipeline_stop(struct pipeline *p)
{
    atomic_store(&p->stopping, true);
    sched_stop(&p->sched);
}

bool pipeline_drain(struct pipeline *p, uint64_t deadline_ns)
{
    sched_stop(&p->sched);
    return sched_wait_idle(&p->sched, deadline_ns);
}

void pipeline_destroy(struct pipeline *p)
{
    sched_destroy(&p->sched);
    ccache_close(p->cache);
    p->cache = NULL;
}

void exec_outcome_free(struct exec_outcome *o)
{
    for (int i = 0; i < STAGE_COUNT; i++)
        if (o->ran[i])
            sbx_result_free(&o->res[i]);
    judge_outcome_free(o->judge);
    memset(o, 0, sizeof(*o));
}

int pipeline_file_exists(struct pipeline *p, const char *id, bool *found, struct ev_err *err)
{
    int fd = -1;
    *found = false;
    if (!p->files)
        return 0;
    if (file_store_open(p->files, id, &fd, NULL, found, err) < 0)
        return -1;
    if (fd >= 0)
        close(fd);
    return 0;
}

int stage_open_file(struct pipeline *p, const char *id, int *fd, struct ev_err *err)
{
    bool found = false;
    *fd = -1;
    if (p->files && file_store_open(p->files, id, fd, NULL, &found, err) < 0)
        return -1;
    if (!found)
        return ev_fail(err, ENOENT, "File with id: %.80s does not exist", id);
    return 0;
}

/* A Nix command is given up when the server stops (its helper then kills it at once). */
static bool stopping(void *arg)
{
    struct pipeline *p = arg;
    return atomic_load(&p->stopping);
}

bool should_abort(void *arg)
{
    struct abort_ctx *a = arg;
    return atomic_load(&a->p->stopping) || (a->fn && a->fn(a->ctx));
}

/* The environment of a host runtime's programs: fixed, minimal, plus the runtime's own
 * variables (which may override the defaults). Pointers into rt->env. */
static size_t build_env(const struct runtime *rt, char **envp, size_t cap)
{
    static char *const defaults[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp",
                                     "LANG=C.UTF-8", "LC_ALL=C.UTF-8"};
    size_t n = 0;
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        envp[n++] = defaults[i];
    for (const char *e = rt ? rt->env : NULL; e && e < rt->env + rt->env_len; e += strlen(e) + 1) {
        size_t klen = (size_t)(strchr(e, '=') - e) + 1;
        size_t j = 0;
        while (j < n && strncmp(envp[j], e, klen) != 0)
            j++;
        if (j == n && n + 1 >= cap)
            break;
        envp[j] = (char *)e;
        if (j == n)
            n++;
    }
    envp[n] = NULL;
    return n;
}

/* Nix runtimes. The stored environment is exactly what nix-shell's shell exported (see
 * privsep/nix.c); a run gets it without what described that one shell process on the host
 * (its working directory, shell level, temporary directories, terminal), with HOME and the
 * temporary directories at /tmp, and with PATH minus the entry nix-shell put first for its
 * own shell (the directory of NIX_BUILD_SHELL, /bin): otherwise the host's /bin would shadow
 * the runtime's own packages. Scripts run with the host's /bin/bash, the same bash nix-shell
 * used, which every box has (PS_NIX_SHELL_BASH, privsep/protocol.h). */

static bool is_nix(const struct runtime *rt)
{
    return rt && rt->provider && strcmp(rt->provider, "nix") == 0;
}

static size_t build_nix_env(const struct runtime *rt, char **envp, size_t cap, char **path_owned)
{
    static char *const fixed[] = {"HOME=/tmp", "TMPDIR=/tmp",  "TMP=/tmp",
                                  "TEMP=/tmp", "TEMPDIR=/tmp", "NIX_BUILD_TOP=/tmp"};
    static const char *const dropped[] = {"PWD",  "OLDPWD", "SHLVL",        "_",
                                          "HOME", "TMP",    "TEMP",         "TEMPDIR",
                                          "TERM", "TMPDIR", "NIX_BUILD_TOP"};
    size_t n = 0;
    *path_owned = NULL;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        envp[n++] = fixed[i];
    for (const char *e = rt->env; e < rt->env + rt->env_len && n + 2 < cap; e += strlen(e) + 1) {
        const char *eq = strchr(e, '=');
        if (!eq)
            continue;
        size_t klen = (size_t)(eq - e);
        bool drop = false;
        for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]) && !drop; i++)
            drop = strlen(dropped[i]) == klen && strncmp(e, dropped[i], klen) == 0;
        if (drop)
            continue;
        if (klen == 4 && strncmp(e, "PATH", 4) == 0) {
            const char *v = eq + 1;
            size_t d = strlen(PS_NIX_SHELL_DIR);
            if (strncmp(v, PS_NIX_SHELL_DIR, d) == 0 && (v[d] == ':' || v[d] == '\0'))
                v += d + (v[d] == ':');
            if (asprintf(path_owned, "PATH=%s", v[0] ? v : "/path-not-set") < 0) {
                *path_owned = NULL;
                continue;
            }
            envp[n++] = *path_owned;
            continue;
        }
        envp[n++] = (char *)e;
    }
    if (!*path_owned)
        envp[n++] = "PATH=/path-not-set";
    envp[n] = NULL;
    return n;
}

static struct ps_limits to_ps(const struct pipeline *p, const struct ev_limits *l)
{
    return (struct ps_limits){
        .wall_time_us = l->wall_time_us,
        .cpu_time_us = l->cpu_time_us,
        .extra_time_us = l->extra_time_us,
        .memory_kb = l->memory_kb,
        .max_open_files = l->max_open_files,
        .max_file_size_kb = l->max_file_size_kb,
        .max_processes = l->max_processes,
        .max_output_bytes = p->cfg->max_output_bytes,
        .tmp_kb = 65536,
    };
}

/* Appends a newline when text does not end with one (SPEC §4); malloc'ed copy. */
static char *with_newline(const char *text, size_t len, size_t *out_len)
{
    bool add = len > 0 && text[len - 1] != '\n';
    char *s = malloc(len + 2);
    if (!s)
        return NULL;
    if (len)
        memcpy(s, text, len);
    if (add)
        s[len++] = '\n';
    s[len] = '\0';
    *out_len = len;
    return s;
}

/* A streamed stage: the box gets one end of each pipe, the stream's consumer the other. */
static int stream_pipes(const struct stage_stream *ss, enum stage stage, uint32_t box,
                        struct psc_run *run, struct ev_err *err)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
    if ((stage == STAGE_RUN && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
        pipe2(errp, O_CLOEXEC) < 0) {
        int e = errno;
        for (int i = 0; i < 2; i++) {
            if (in[i] >= 0)
                close(in[i]);
            if (out[i] >= 0)
                close(out[i]);
        }
        return ev_fail(err, e, "pipe");
    }
    if (stage == STAGE_RUN) {
        run->input = NULL;
        run->input_len = 0;
        run->input_newline = false;
        run->input_fd = in[0];
    }
    run->output_fd = out[1];
    run->error_fd = errp[1];
    ss->begin(ss->ctx, stage, box, in[1], out[0], errp[0]);
    return 0;
}

/* stage: which stage the run is, for its metrics; STAGE_COUNT for the server's own runs around
 * a stage (the compile cache's archive runs), which are not counted. */
static enum pipe_status run_in_box(struct pipeline *p, uint32_t box, const struct program_env *pe,
                                   struct psc_run *run, const struct ps_limits *pl,
                                   enum stage stage, struct abort_ctx *ac, struct sbx_result *res,
                                   struct ev_err *err)
{
    run->runtime = pe->rt ? pe->rt->dir : NULL;
    run->mount_nix = pe->nix;
    run->envp = (char *const *)pe->envp;
    /* SPEC §4: an input that does not end in a newline gets one; added by the client as it
     * fills the memfd, so a large input is not copied */
    run->input_newline =
        run->input && run->input_len && ((const char *)run->input)[run->input_len - 1] != '\n';
    run->limits = *pl;
    /* ac's, when the request's runs go on in threads of their own (an interactor's) */
    run->request_id = ac->request_id ? ac->request_id : thread_request_id;
    const struct stage_stream *ss = stage < STAGE_COUNT ? ac->stream : NULL;
    if (ss && stream_pipes(ss, stage, box, run, err) < 0)
        return PIPE_INTERNAL;
    bool aborted;
    uint64_t t0 = monotonic_ns();
    if (psc_run(p->psc, box, run, should_abort, ac, res, &aborted, err) < 0) {
        if (ss)
            ss->end(ss->ctx, stage, NULL);
        if (aborted)
            return atomic_load(&p->stopping) ? PIPE_STOPPING : PIPE_ABORTED;
        return PIPE_INTERNAL;
    }
    if (stage < STAGE_COUNT)
        metrics_stage(stage, (monotonic_ns() - t0) / 1000, res->status);
    if (ss)
        ss->end(ss->ctx, stage, res);
    return PIPE_OK;
}

enum pipe_status stage_run(struct pipeline *p, uint32_t box, const struct program_env *pe,
                           struct psc_run *run, const struct ev_limits *l, struct abort_ctx *ac,
                           struct sbx_result *res, struct ev_err *err)
{
    struct ps_limits pl = to_ps(p, l);
    return run_in_box(p, box, pe, run, &pl, STAGE_RUN, ac, res, err);
}

/* One of the server's own fixed scripts, in the plain environment without a runtime. */
static enum pipe_status run_own_script(struct pipeline *p, uint32_t box, const char *script,
                                       const struct ps_limits *pl, enum stage stage,
                                       struct abort_ctx *ac, struct sbx_result *res,
                                       struct ev_err *err)
{
    char *argv[] = {"bash", "-c", (char *)script, NULL};
    struct psc_run run = {.argv = argv};
    struct program_env plain;
    program_env_init(&plain, NULL);
    enum pipe_status st = run_in_box(p, box, &plain, &run, pl, stage, ac, res, err);
    program_env_free(&plain);
    return st;
}

static enum pipe_status run_stage(struct pipeline *p, uint32_t box, const struct program_env *pe,
                                  char *const *argv, const char *input, size_t input_len,
                                  const struct ev_limits *l, enum stage stage, struct abort_ctx *ac,
                                  struct sbx_result *res, struct ev_err *err)
{
    struct psc_run run = {.argv = argv, .input = input, .input_len = input_len};
    struct ps_limits pl = to_ps(p, l);
    return run_in_box(p, box, pe, &run, &pl, stage, ac, res, err);
}

static bool plain_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("_./+=:,@%-", c);
}

/* A first word that bash would not look up as a program: a builtin or a keyword. */
static bool shell_word(const char *w)
{
    static const char *const words[] = {
        ".",      ":",       "[",         "alias",    "bg",       "bind",    "break",    "builtin",
        "caller", "cd",      "command",   "compgen",  "complete", "compopt", "continue", "declare",
        "dirs",   "disown",  "echo",      "enable",   "eval",     "exec",    "exit",     "export",
        "false",  "fc",      "fg",        "getopts",  "hash",     "help",    "history",  "jobs",
        "kill",   "let",     "local",     "logout",   "mapfile",  "popd",    "printf",   "pushd",
        "pwd",    "read",    "readarray", "readonly", "return",   "set",     "shift",    "shopt",
        "source", "suspend", "test",      "times",    "trap",     "true",    "type",     "typeset",
        "ulimit", "umask",   "unalias",   "unset",    "wait",     "if",      "then",     "else",
        "elif",   "fi",      "case",      "esac",     "for",      "select",  "while",    "until",
        "do",     "done",    "in",        "function", "time",     "coproc"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcmp(w, words[i]) == 0)
            return true;
    return false;
}

void script_argv_init(struct script_argv *sa, const char *bash, const char *script,
                      const char *name)
{
    memset(sa, 0, sizeof(*sa));
    bool plain = script[0] != '\0' && script[0] != '%';
    for (const char *c = script; plain && *c; c++)
        plain = plain_char(*c) || *c == ' ' || *c == '\t';
    if (plain)
        sa->words = strdup(script);
    size_t n = 0;
    char *save = NULL;
    for (char *w = sa->words ? strtok_r(sa->words, " \t", &save) : NULL; w && plain;
         w = strtok_r(NULL, " \t", &save)) {
        if (n == PS_MAX_ARGS || (n == 0 && (strchr(w, '=') || shell_word(w))))
            plain = false;
        else
            sa->argv[n++] = w;
    }
    if (plain && n > 0) {
        sa->argv[n] = NULL;
        return;
    }
    free(sa->words);
    sa->words = NULL;
    sa->argv[0] = (char *)bash;
    sa->argv[1] = "-c";
    sa->argv[2] = (char *)script;
    sa->argv[3] = (char *)name;
    sa->argv[4] = NULL;
}

void script_argv_free(struct script_argv *sa)
{
    free(sa->words);
    sa->words = NULL;
}

void program_env_init(struct program_env *pe, const struct runtime *rt)
{
    memset(pe, 0, sizeof(*pe));
    pe->rt = rt;
    pe->nix = is_nix(rt);
    pe->bash = pe->nix ? PS_NIX_SHELL_BASH : "bash";
    if (pe->nix)
        build_nix_env(rt, pe->envp, sizeof(pe->envp) / sizeof(pe->envp[0]), &pe->nix_path);
    else
        build_env(rt, pe->envp, sizeof(pe->envp) / sizeof(pe->envp[0]));
}

void program_env_free(struct program_env *pe)
{
    free(pe->nix_path);
    pe->nix_path = NULL;
}

static enum pipe_status build_fresh(struct pipeline *p, uint32_t box, const struct program_env *pe,
                                    const struct build_request *b, struct abort_ctx *ac,
                                    struct exec_outcome *out, bool *built, struct ev_err *err)
{
    const struct runtime *rt = pe->rt;
    enum pipe_status st;
    *built = false;
    if (b->is_project) {
        if (psc_write_file(p->psc, box, ARCHIVE_NAME, 0644, b->source, b->source_len, err) < 0)
            return PIPE_INTERNAL;
        char *argv[] = {"bash", "-c", (char *)extract_script, NULL};
        struct program_env plain;
        program_env_init(&plain, NULL);
        st = run_stage(p, box, &plain, argv, NULL, 0, b->compile, STAGE_EXTRACT, ac,
                       &out->res[STAGE_EXTRACT], err);
        program_env_free(&plain);
        if (st != PIPE_OK)
            return st;
        out->ran[STAGE_EXTRACT] = true;
        if (out->res[STAGE_EXTRACT].status != SBX_OK)
            return PIPE_OK;
    } else {
        size_t len;
        cleanup_free char *src = with_newline(b->source, b->source_len, &len);
        if (!src)
            return ev_fail(err, ENOMEM, "source"), PIPE_INTERNAL;
        if (psc_write_file(p->psc, box, rt->source_file_name, 0644, src, len, err) < 0)
            return PIPE_INTERNAL;
    }
    if (rt->compile_script[0]) {
        struct script_argv sa;
        script_argv_init(&sa, pe->bash, rt->compile_script, "/runtime/compile.sh");
        st = run_stage(p, box, pe, sa.argv, NULL, 0, b->compile, STAGE_COMPILE, ac,
                       &out->res[STAGE_COMPILE], err);
        script_argv_free(&sa);
        if (st != PIPE_OK)
            return st;
        out->ran[STAGE_COMPILE] = true;
        if (out->res[STAGE_COMPILE].status != SBX_OK)
            return PIPE_OK;
    }
    *built = true;
    return PIPE_OK;
}

/* ---- the compile cache (see compile_cache.h for the storage) */

static void key_field(struct sha256 *c, const void *data, size_t len)
{
    uint64_t n = len;
    sha256_update(c, &n, sizeof(n));
    if (len)
        sha256_update(c, data, len);
}

static void key_string(struct sha256 *c, const char *s)
{
    key_field(c, s ? s : "", s ? strlen(s) : 0);
}

/* Everything that can change what a compile leaves: the runtime's installation (its directory
 * name is drawn afresh for every one, and its definition is hashed as well), the program, the
 * request's compile limits, and the server settings that bound a stage's output and box. */
static void cache_key(const struct pipeline *p, const struct runtime *rt,
                      const struct build_request *b, char key[CCACHE_KEY_LEN + 1])
{
    struct sha256 c;
    sha256_init(&c);
    key_string(&c, "envicutor compile cache 1");
    key_string(&c, rt->dir);
    key_string(&c, rt->provider);
    key_string(&c, rt->source_file_name);
    key_string(&c, rt->compile_script);
    key_string(&c, rt->nix_shell);
    key_field(&c, rt->env, rt->env ? rt->env_len : 0);
    unsigned char project = b->is_project;
    key_field(&c, &project, 1);
    key_field(&c, b->source, b->source_len);
    uint64_t v[LIM_COUNT + 3];
    limits_to_array(b->compile, v);
    v[LIM_COUNT] = p->cfg->max_output_bytes;
    v[LIM_COUNT + 1] = p->cfg->box_disk_kb;
    v[LIM_COUNT + 2] = p->cfg->box_max_files;
    key_field(&c, v, sizeof(v));
    unsigned char d[SHA256_LEN];
    sha256_final(&c, d);
    sha256_hex(d, key);
}

/* A hit: the box gets the files, out the results of the compile that made the entry. *hit false
 * when there is no usable entry; then the caller compiles. An archive the box failed to unpack
 * (it was checked against its digest, so it is what an identical compile left) only means a
 * miss: the compile that follows writes the same files over whatever was unpacked. */
static enum pipe_status build_from_cache(struct pipeline *p, uint32_t box, const struct runtime *rt,
                                         const char *key, struct abort_ctx *ac,
                                         struct exec_outcome *out, bool *hit, bool *built,
                                         struct ev_err *err)
{
    *hit = false;
    struct ccache_entry e;
    bool found;
    struct ev_err cerr;
    if (ccache_get(p->cache, rt->dir, key, &e, &found, &cerr) < 0) {
        fprintf(stderr, "envicutor: %s\n", cerr.msg);
        return PIPE_OK;
    }
    if (!found)
        return PIPE_OK;
    if (e.compile.status == SBX_OK) {
        if (psc_write_file(p->psc, box, CACHE_ARCHIVE, 0644, e.archive, e.archive_len, err) < 0) {
            ccache_entry_free(&e);
            return PIPE_INTERNAL;
        }
        struct ps_limits pl = to_ps(p, &p->cfg->compile);
        struct sbx_result res;
        enum pipe_status st =
            run_own_script(p, box, cache_restore_script, &pl, STAGE_COUNT, ac, &res, err);
        if (st != PIPE_OK) {
            ccache_entry_free(&e);
            return st;
        }
        bool restored = res.status == SBX_OK;
        if (!restored)
            fprintf(stderr, "envicutor: compile cache: unpacking %s/%s failed (%s): compiling\n",
                    rt->dir, key, res.err.len ? res.err.data : res.message);
        sbx_result_free(&res);
        if (!restored) {
            ccache_entry_free(&e);
            return PIPE_OK;
        }
    }
    if (e.has_extract) {
        out->res[STAGE_EXTRACT] = e.extract;
        out->ran[STAGE_EXTRACT] = true;
    }
    out->res[STAGE_COMPILE] = e.compile;
    out->ran[STAGE_COMPILE] = true;
    out->cached = true;
    *built = e.compile.status == SBX_OK;
    *hit = true;
    free(e.archive);
    return PIPE_OK;
}

/* After a compile that ran to an exit (OK, or RE: a compile error is an answer worth keeping;
 * not a time limit, a signal, a memory limit or a failure of the sandbox), stores its results
 * and, when it succeeded, the box's files. A box whose archive does not fit the output bound
 * is not stored. */
static enum pipe_status save_to_cache(struct pipeline *p, uint32_t box, const struct runtime *rt,
                                      const char *key, struct abort_ctx *ac,
                                      const struct exec_outcome *out, struct ev_err *err)
{
    const struct sbx_result *c = &out->res[STAGE_COMPILE];
    if ((c->status != SBX_OK && c->status != SBX_RE) || c->memory_limit_exceeded)
        return PIPE_OK;
    struct ccache_entry e = {.has_extract = out->ran[STAGE_EXTRACT], .compile = *c};
    if (e.has_extract)
        e.extract = out->res[STAGE_EXTRACT];
    struct sbx_result tar;
    bool have_tar = false;
    if (c->status == SBX_OK) {
        struct ps_limits pl = to_ps(p, &p->cfg->compile);
        /* the whole box and tar's headers, but never more than the cache could keep */
        pl.max_output_bytes = p->cfg->box_disk_kb * 1024 + (4u << 20);
        if (pl.max_output_bytes > p->cfg->compile_cache_bytes)
            pl.max_output_bytes = p->cfg->compile_cache_bytes;
        if (pl.max_output_bytes > CACHE_MAX_ARCHIVE)
            pl.max_output_bytes = CACHE_MAX_ARCHIVE;
        enum pipe_status st =
            run_own_script(p, box, cache_save_script, &pl, STAGE_COUNT, ac, &tar, err);
        if (st != PIPE_OK)
            return st;
        have_tar = true;
        if (tar.status != SBX_OK || tar.out.truncated) {
            sbx_result_free(&tar);
            return PIPE_OK;
        }
        e.archive = tar.out.data;
        e.archive_len = tar.out.len;
    }
    struct ev_err cerr;
    if (ccache_put(p->cache, rt->dir, key, &e, &cerr) < 0)
        fprintf(stderr, "envicutor: %s\n", cerr.msg);
    if (have_tar)
        sbx_result_free(&tar);
    return PIPE_OK;
}

enum pipe_status stage_build(struct pipeline *p, uint32_t box, const struct program_env *pe,
                             const struct build_request *b, struct abort_ctx *ac,
                             struct exec_outcome *out, bool *built, struct ev_err *err)
{
    *built = false;
    /* a runtime without a compile script has nothing worth keeping */
    bool cacheable = p->cache && pe->rt && pe->rt->compile_script[0] && !ac->stream;
    char key[CCACHE_KEY_LEN + 1];
    enum pipe_status st;
    if (cacheable) {
        cache_key(p, pe->rt, b, key);
        bool hit;
        st = build_from_cache(p, box, pe->rt, key, ac, out, &hit, built, err);
        if (st != PIPE_OK)
            return st;
        metrics_compile_cache(hit);
        if (hit)
            return st;
    }
    st = build_fresh(p, box, pe, b, ac, out, built, err);
    if (st == PIPE_OK && cacheable && out->ran[STAGE_COMPILE])
        st = save_to_cache(p, box, pe->rt, key, ac, out, err);
    return st;
}

static enum pipe_status execute_in_box(struct pipeline *p, uint32_t box, const struct runtime *rt,
                                       const struct exec_request *req, struct abort_ctx *ac,
                                       struct exec_outcome *out, struct ev_err *err)
{
    struct program_env pe;
    program_env_init(&pe, rt);
    struct build_request b = {req->source, req->source_len, req->is_project, &req->compile};
    bool built;
    enum pipe_status st = stage_build(p, box, &pe, &b, ac, out, &built, err);
    if (st == PIPE_OK && built) {
        struct script_argv sa;
        script_argv_init(&sa, pe.bash, rt->run_script, "/runtime/run.sh");
        struct psc_run run = {.argv = sa.argv,
                              .input = req->input ? req->input : "",
                              .input_len = req->input ? req->input_len : 0};
        /* psc_run takes the descriptor it is given (and closes it) */
        int fd = -1;
        if (req->input_file && stage_open_file(p, req->input_file, &fd, err) < 0)
            st = PIPE_INTERNAL;
        run.input_fd = fd;
        if (st == PIPE_OK)
            st = stage_run(p, box, &pe, &run, &req->run, ac, &out->res[STAGE_RUN], err);
        if (st == PIPE_OK)
            out->ran[STAGE_RUN] = true;
        script_argv_free(&sa);
    }
    program_env_free(&pe);
    return st;
}

static enum pipe_status from_sched(enum sched_outcome o)
{
    switch (o) {
    case SCHED_GRANTED:
        return PIPE_OK;
    case SCHED_FULL:
        return PIPE_QUEUE_FULL;
    case SCHED_ABORTED:
        return PIPE_ABORTED;
    default:
        return PIPE_STOPPING;
    }
}

enum pipe_status pipeline_execute(struct pipeline *p, const struct exec_request *req,
                                  pipe_abort_fn abort_fn, void *ctx, struct exec_outcome *out,
                                  struct ev_err *err)
{
    memset(out, 0, sizeof(*out));
    struct abort_ctx ac = {p, abort_fn, ctx, NULL, NULL};
    enum pipe_status st = from_sched(sched_acquire(&p->sched, SCHED_SUBMISSION, should_abort, &ac));
    if (st != PIPE_OK)
        return st;
    return pipeline_execute_granted(p, req, abort_fn, ctx, out, err);
}

enum pipe_status pipeline_enqueue(struct pipeline *p, struct sched_ticket *t)
{
    pthread_mutex_lock(&p->sched.mu);
    enum pipe_status st = from_sched(sched_enqueue_job(&p->sched, t, SCHED_SUBMISSION));
    pthread_mutex_unlock(&p->sched.mu);
    return st;
}

struct sched_ticket *pipeline_withdraw(struct pipeline *p, uint64_t tag)
{
    pthread_mutex_lock(&p->sched.mu);
    struct sched_ticket *t = sched_find_tag(&p->sched, tag);
    if (t)
        sched_withdraw(&p->sched, t);
    pthread_mutex_unlock(&p->sched.mu);
    return t;
}

void pipeline_each_waiting(struct pipeline *p,
                           void (*fn)(struct sched_ticket *t, unsigned ahead, void *ctx), void *ctx)
{
    pthread_mutex_lock(&p->sched.mu);
    sched_each_waiting(&p->sched, fn, ctx);
    pthread_mutex_unlock(&p->sched.mu);
}

enum pipe_status pipeline_acquire(struct pipeline *p, pipe_abort_fn abort_fn, void *ctx)
{
    struct abort_ctx ac = {p, abort_fn, ctx, NULL, NULL};
    return from_sched(sched_acquire(&p->sched, SCHED_SUBMISSION, should_abort, &ac));
}

void pipeline_release(struct pipeline *p)
{
    sched_done(&p->sched, SCHED_SUBMISSION);
}

enum pipe_status pipeline_execute_granted(struct pipeline *p, const struct exec_request *req,
                                          pipe_abort_fn abort_fn, void *ctx,
                                          struct exec_outcome *out, struct ev_err *err)
{
    memset(out, 0, sizeof(*out));
    struct abort_ctx ac = {p, abort_fn, ctx, thread_request_id, req->stream};
    enum pipe_status st;
    /* Deletion is exclusive work: while we hold our turn the runtime cannot go away, but it
     * may have gone while we waited, and a runtime installed since may carry the same id. Its
     * directory name is drawn afresh for every installation, so id and directory together
     * say whether req->rt is still the installed runtime; when it is, its directory exists
     * and the copy is what the row says. */
    bool installed = false;
    int r = store_is_installed(p->store, req->rt->id, req->rt->dir, &installed, err);
    const struct judge_program *hp = !req->judge              ? NULL
                                     : req->judge->interactor ? req->judge->interactor
                                                              : req->judge->custom;
    if (r == 0 && installed && hp)
        r = store_is_installed(p->store, hp->rt->id, hp->rt->dir, &installed, err);
    if (r < 0 || !installed) {
        sched_done(&p->sched, SCHED_SUBMISSION);
        return r < 0 ? PIPE_INTERNAL : PIPE_NO_RUNTIME;
    }
    uint32_t box;
    uint64_t t0 = monotonic_ns();
    int opened = psc_open_box(p->psc, p->cfg->box_disk_kb, p->cfg->box_max_files, &box, err);
    metrics_box_open((monotonic_ns() - t0) / 1000, opened == 0);
    if (opened < 0) {
        st = PIPE_INTERNAL;
    } else {
        st = req->judge ? judge_in_box(p, box, req, &ac, out, err)
                        : execute_in_box(p, box, req->rt, req, &ac, out, err);
        struct ev_err cerr;
        if (psc_close_box(p->psc, box, &cerr) < 0)
            fprintf(stderr, "envicutor: close box: %s\n", cerr.msg);
    }
    sched_done(&p->sched, SCHED_SUBMISSION);
    if (st != PIPE_OK)
        exec_outcome_free(out);
    else if (out->judge)
        for (size_t i = 0; i < out->judge->n_tests; i++)
            metrics_verdict(out->judge->tests[i].verdict);
    return st;
}

static char *dup_output(const struct sbx_output *o)
{
    char *s = malloc(o->len + 1);
    if (s) {
        if (o->len)
            memcpy(s, o->data, o->len);
        s[o->len] = '\0';
    }
    return s;
}

/* Runs the set-up of a prepared (not yet committed) runtime in a box of its own. */
static enum pipe_status setup_runtime(struct pipeline *p, const struct runtime *rt, char **out,
                                      char **errout, struct ev_err *err)
{
    uint32_t box;
    if (psc_open_box(p->psc, p->cfg->box_disk_kb, p->cfg->box_max_files, &box, err) < 0)
        return PIPE_INTERNAL;
    struct ev_limits l = p->cfg->compile;
    uint64_t cap = p->cfg->installation_timeout * 1000000ull;
    if (l.wall_time_us > cap)
        l.wall_time_us = cap;
    struct program_env pe;
    program_env_init(&pe, rt);
    char *argv[] = {"bash", "-c", (char *)setup_script, NULL};
    struct sbx_result res;
    struct abort_ctx ac = {p, NULL, NULL, NULL, NULL};
    enum pipe_status st = run_stage(p, box, &pe, argv, NULL, 0, &l, STAGE_COUNT, &ac, &res, err);
    program_env_free(&pe);
    struct ev_err cerr;
    if (psc_close_box(p->psc, box, &cerr) < 0)
        fprintf(stderr, "envicutor: close box: %s\n", cerr.msg);
    if (st != PIPE_OK)
        return st;
    *out = dup_output(&res.out);
    *errout = dup_output(&res.err);
    if (res.status == SBX_XX && res.message[0] && *errout && !res.err.len) {
        free(*errout);
        *errout = strdup(res.message);
    }
    bool ok = res.status == SBX_OK;
    sbx_result_free(&res);
    if (!*out || !*errout)
        return ev_fail(err, ENOMEM, "set-up output"), PIPE_INTERNAL;
    return ok ? PIPE_OK : PIPE_SETUP_FAILED;
}

/* The set-up of a Nix runtime: nix-shell once, as root, in the helper (privsep/nix.c); its
 * environment becomes the runtime's. */
static enum pipe_status setup_nix_runtime(struct pipeline *p, struct runtime *rt, char **out,
                                          char **errout, struct ev_err *err)
{
    struct psc_nix_result res;
    if (psc_nix(p->psc, PS_NIX_INSTALL, rt->dir, (unsigned)p->cfg->installation_timeout, stopping,
                p, &res, err) < 0)
        return PIPE_INTERNAL;
    *out = res.out;
    *errout = res.err;
    res.out = res.err = NULL;
    enum pipe_status st = res.exit_code == 0 ? PIPE_OK : PIPE_SETUP_FAILED;
    size_t count = 0;
    for (size_t i = 0; i < res.env_len; i++)
        count += res.env[i] == '\0';
    /* Every run carries the environment in one helper message. */
    if (st == PIPE_OK && (count > MAX_ENV_ENTRIES || res.env_len > PS_MAX_MSG / 2)) {
        char *e = NULL;
        if (asprintf(&e,
                     "%senvicutor: the shell's environment is too large (%zu variables, %zu "
                     "bytes; at most %d and %d)\n",
                     *errout ? *errout : "", count, res.env_len, MAX_ENV_ENTRIES,
                     PS_MAX_MSG / 2) >= 0) {
            free(*errout);
            *errout = e;
        }
        st = PIPE_SETUP_FAILED;
    }
    if (st == PIPE_OK) {
        free(rt->env);
        rt->env = res.env;
        rt->env_len = res.env_len;
        res.env = NULL;
    }
    psc_nix_result_free(&res);
    if (!*out || !*errout)
        return ev_fail(err, ENOMEM, "set-up output"), PIPE_INTERNAL;
    return st;
}

enum pipe_status pipeline_install(struct pipeline *p, struct runtime *rt, pipe_abort_fn abort_fn,
                                  void *ctx, char **out, char **errout, struct ev_err *err)
{
    *out = *errout = NULL;
    struct abort_ctx ac = {p, abort_fn, ctx, NULL, NULL};
    enum pipe_status st = from_sched(sched_acquire(&p->sched, SCHED_EXCLUSIVE, should_abort, &ac));
    if (st != PIPE_OK)
        return st;
    bool name_taken = false, id_taken = false;
    if (store_name_taken(p->store, rt->name, &name_taken, err) < 0 ||
        (!name_taken && rt->id > 0 && store_id_taken(p->store, rt->id, &id_taken, err) < 0)) {
        st = PIPE_INTERNAL;
    } else if (name_taken) {
        st = PIPE_NAME_TAKEN;
    } else if (id_taken) {
        st = PIPE_ID_TAKEN;
    } else if (store_prepare(p->store, rt, err) < 0) {
        st = PIPE_INTERNAL;
    } else {
        st = is_nix(rt) ? setup_nix_runtime(p, rt, out, errout, err)
                        : setup_runtime(p, rt, out, errout, err);
        if (st == PIPE_OK) {
            enum store_conflict c;
            st = store_commit(p->store, rt, &c, err) < 0 ? PIPE_INTERNAL
                 : c == STORE_ID_TAKEN                   ? PIPE_ID_TAKEN
                 : c == STORE_NAME_TAKEN                 ? PIPE_NAME_TAKEN
                                                         : PIPE_OK;
        }
        if (st != PIPE_OK)
            store_discard(p->store, rt->dir);
    }
    sched_done(&p->sched, SCHED_EXCLUSIVE);
    if (st != PIPE_OK && st != PIPE_SETUP_FAILED) {
        free(*out);
        free(*errout);
        *out = *errout = NULL;
    }
    return st;
}

enum pipe_status pipeline_delete(struct pipeline *p, int64_t id, pipe_abort_fn abort_fn, void *ctx,
                                 struct ev_err *err)
{
    struct abort_ctx ac = {p, abort_fn, ctx, NULL, NULL};
    enum pipe_status st = from_sched(sched_acquire(&p->sched, SCHED_EXCLUSIVE, should_abort, &ac));
    if (st != PIPE_OK)
        return st;
    /* the directory name of the installation being deleted names its compile cache group;
     * read under the exclusive turn, so it is the one store_delete removes */
    struct runtime rt;
    bool found;
    int r = store_get(p->store, id, &rt, &found, err);
    if (r == 0 && found) {
        char dir[sizeof(rt.dir)];
        memcpy(dir, rt.dir, sizeof(dir));
        runtime_free(&rt);
        r = store_delete(p->store, id, &found, err);
        /* after the row: a crash in between leaves a group that the next start drops */
        struct ev_err cerr;
        if (r == 0 && found && p->cache && ccache_drop_runtime(p->cache, dir, &cerr) < 0)
            fprintf(stderr, "envicutor: %s\n", cerr.msg);
    }
    sched_done(&p->sched, SCHED_EXCLUSIVE);
    return r < 0 ? PIPE_INTERNAL : found ? PIPE_OK : PIPE_NO_RUNTIME;
}

bool nix_available(void)
{
    char tool[4200];
    const char *path = getenv("PATH");
    return find_in_path("nix-shell", PS_NIX_PROFILE_BINS, tool, sizeof(tool)) == 0 ||
           (path && find_in_path("nix-shell", path, tool, sizeof(tool)) == 0);
}

enum pipe_status pipeline_update(struct pipeline *p, pipe_abort_fn abort_fn, void *ctx, char **out,
                                 char **errout, struct ev_err *err)
{
    *out = *errout = NULL;
    struct abort_ctx ac = {p, abort_fn, ctx, NULL, NULL};
    enum pipe_status st = from_sched(sched_acquire(&p->sched, SCHED_EXCLUSIVE, should_abort, &ac));
    if (st != PIPE_OK)
        return st;
    if (!nix_available()) {
        *out = strdup("");
        *errout = strdup("Nix is not available on this server: there is no package manager "
                         "to update (host runtimes use the system's own packages)");
        st = PIPE_SETUP_FAILED;
    } else {
        struct psc_nix_result res;
        if (psc_nix(p->psc, PS_NIX_UPDATE, NULL, (unsigned)p->cfg->update_timeout, stopping, p,
                    &res, err) < 0) {
            st = PIPE_INTERNAL;
        } else {
            st = res.exit_code == 0 ? PIPE_OK : PIPE_SETUP_FAILED;
            *out = res.out;
            *errout = res.err;
            res.out = res.err = NULL;
            psc_nix_result_free(&res);
        }
    }
    sched_done(&p->sched, SCHED_EXCLUSIVE);
    if (st == PIPE_INTERNAL)
        return st;
    if (!*out || !*errout) {
        free(*out);
        free(*errout);
        *out = *errout = NULL;
        return ev_fail(err, ENOMEM, "update"), PIPE_INTERNAL;
    }
    return st;
}

void gc_outcome_free(struct gc_outcome *g)
{
    for (size_t i = 0; i < g->n_paths; i++)
        free(g->paths[i]);
    free(g->paths);
    free(g->out);
    free(g->err);
    memset(g, 0, sizeof(*g));
}

/* nix-store --gc says "deleting '/nix/store/...'" on stderr for each path it removes. */
static int collect_deleted(struct gc_outcome *g)
{
    static const char mark[] = "deleting '/nix/store/";
    for (const char *l = g->err; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t len = nl ? (size_t)(nl - l) : strlen(l);
        if (len > sizeof(mark) && strncmp(l, mark, sizeof(mark) - 1) == 0 && l[len - 1] == '\'') {
            char **np = realloc(g->paths, (g->n_paths + 1) * sizeof(*np));
            if (!np)
                return -1;
            g->paths = np;
            g->paths[g->n_paths] = strndup(l + 10, len - 11);
            if (!g->paths[g->n_paths])
                return -1;
            g->n_paths++;
        }
        l = nl ? nl + 1 : l + len;
    }
    return 0;
}

enum pipe_status pipeline_gc(struct pipeline *p, pipe_abort_fn abort_fn, void *ctx,
                             struct gc_outcome *g, struct ev_err *err)
{
    memset(g, 0, sizeof(*g));
    struct abort_ctx ac = {p, abort_fn, ctx, NULL, NULL};
    enum pipe_status st = from_sched(sched_acquire(&p->sched, SCHED_EXCLUSIVE, should_abort, &ac));
    if (st != PIPE_OK)
        return st;
    /* Directories without a row first: they would otherwise hold GC roots. */
    int removed = store_sweep(p->store, err);
    if (removed < 0) {
        st = PIPE_INTERNAL;
    } else {
        g->dirs_removed = (size_t)removed;
        g->nix = nix_available();
        struct psc_nix_result res;
        if (g->nix) {
            if (psc_nix(p->psc, PS_NIX_GC, NULL, (unsigned)p->cfg->update_timeout, stopping, p,
                        &res, err) < 0) {
                st = PIPE_INTERNAL;
            } else {
                g->ok = res.exit_code == 0;
                g->out = res.out;
                g->err = res.err;
                res.out = res.err = NULL;
                psc_nix_result_free(&res);
                if (collect_deleted(g) < 0) {
                    ev_fail(err, ENOMEM, "garbage collection");
                    st = PIPE_INTERNAL;
                }
            }
        } else {
            g->ok = true;
        }
    }
    sched_done(&p->sched, SCHED_EXCLUSIVE);
    if (st != PIPE_OK)
        gc_outcome_free(g);
    return st;
}
