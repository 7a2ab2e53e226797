/* Judge mode (SPEC §8): the program is built once in its box, then each test is a fresh run
 * of that box (fresh_box: nothing a test writes is seen by the next), its output compared by a
 * built-in checker (checker.c) or a custom checker program, or the program talks to an
 * interactor through two pipes. Checkers and interactors are built once per request in a box
 * of their own and run, like the tests, in fresh runs of it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/checker.h"
#include "pipeline/stages.h"

static const char *const verdict_names[] = {"AC", "WA", "PE", "TLE", "MLE",    "OLE",
                                            "RE", "SG", "CF", "XX",  "SKIPPED"};

const char *verdict_name(enum verdict v)
{
    return (unsigned)v < sizeof(verdict_names) / sizeof(verdict_names[0]) ? verdict_names[v] : "XX";
}

void judge_outcome_free(struct judge_outcome *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n_tests; i++) {
        if (j->tests[i].ran)
            sbx_result_free(&j->tests[i].run);
        free(j->tests[i].message);
    }
    for (int i = 0; i < STAGE_COUNT; i++)
        if (j->helper_ran[i])
            sbx_result_free(&j->helper_res[i]);
    free(j->tests);
    free(j);
}

/* How a run of the program ended, before any checker: AC means "ran to exit 0 within its
 * limits", for the checker to decide. */
static enum verdict verdict_of_run(const struct sbx_result *r)
{
    if (r->status == SBX_XX)
        return VERDICT_XX;
    if (r->memory_limit_exceeded)
        return VERDICT_MLE;
    if (r->status == SBX_TO)
        return VERDICT_TLE;
    if (r->out.truncated)
        return VERDICT_OLE;
    if (r->status == SBX_SG)
        return VERDICT_SG;
    if (r->status == SBX_RE)
        return VERDICT_RE;
    return VERDICT_AC;
}

/* The first line of a checker's output, its message to the client (at most 1 KiB). */
static char *first_line(const struct sbx_output *o)
{
    size_t n = 0;
    while (n < o->len && n < 1024 && o->data[n] != '\n')
        n++;
    while (n > 0 && o->data[n - 1] == '\r')
        n--;
    return n ? strndup(o->data, n) : NULL;
}

/* The verdict a custom checker's or an interactor's run gives (testlib's convention): exit 0
 * AC, 1 WA, 2 PE; anything else, a signal or a limit is a checker failure. */
static enum verdict verdict_of_checker(const struct sbx_result *r)
{
    if (r->status == SBX_OK)
        return VERDICT_AC;
    if (r->status == SBX_RE && !r->memory_limit_exceeded &&
        (r->exit_code == 1 || r->exit_code == 2))
        return r->exit_code == 1 ? VERDICT_WA : VERDICT_PE;
    return VERDICT_CF;
}

static char *checker_failure(const char *who, const struct sbx_result *r)
{
    char *m = NULL;
    const char *st = sbx_status_name(r->status);
    if (r->status == SBX_RE)
        (void)!asprintf(&m, "the %s failed: exit code %d", who, r->exit_code);
    else if (r->status == SBX_SG)
        (void)!asprintf(&m, "the %s failed: killed by signal %d%s", who, r->exit_signal,
                        r->memory_limit_exceeded ? " (memory limit)" : "");
    else
        (void)!asprintf(&m, "the %s failed: %s%s%s", who, st ? st : "?", r->message[0] ? ": " : "",
                        r->message);
    return m;
}

/* A text of a test as a descriptor or bytes; *fd is opened when it names a stored file. */
static int open_text(struct pipeline *p, const struct judge_text *t, int *fd, struct ev_err *err)
{
    *fd = -1;
    if (t->present && t->file_id)
        return stage_open_file(p, t->file_id, fd, err);
    return 0;
}

/* The helper program of the request (checker or interactor), built in a box of its own. */
struct helper_box {
    bool open, built;
    uint32_t box;
    struct program_env pe;
    struct script_argv sa;
    char **argv;
};

static enum pipe_status helper_build(struct pipeline *p, const struct judge_program *prog,
                                     struct abort_ctx *ac, struct judge_outcome *jo,
                                     struct helper_box *h, struct ev_err *err)
{
    memset(h, 0, sizeof(*h));
    if (psc_open_box(p->psc, p->cfg->box_disk_kb, p->cfg->box_max_files, &h->box, err) < 0)
        return PIPE_INTERNAL;
    h->open = true;
    program_env_init(&h->pe, prog->rt);
    struct build_request b = {prog->source, prog->source_len, false, &prog->compile};
    struct exec_outcome built = {0};
    enum pipe_status st = stage_build(p, h->box, &h->pe, &b, ac, &built, &h->built, err);
    for (int i = 0; i < STAGE_COUNT; i++) {
        jo->helper_ran[i] = built.ran[i];
        jo->helper_res[i] = built.res[i];
    }
    jo->helper_cached = built.cached;
    script_argv_init(&h->sa, h->pe.bash, prog->rt->run_script, "/runtime/run.sh");
    h->argv = h->sa.argv;
    return st;
}

static void helper_close(struct pipeline *p, struct helper_box *h)
{
    if (!h->open)
        return;
    program_env_free(&h->pe);
    script_argv_free(&h->sa);
    struct ev_err cerr;
    if (psc_close_box(p->psc, h->box, &cerr) < 0)
        fprintf(stderr, "envicutor: close box: %s\n", cerr.msg);
    h->open = false;
}

/* ---- one test against a checker ------------------------------------------------------------ */

struct judge_ctx {
    struct pipeline *p;
    const struct exec_request *req;
    const struct judge_request *jr;
    struct abort_ctx *ac;
    uint32_t box;
    struct program_env pe;
    struct script_argv sa;
    struct helper_box helper;
};

/* psc_run takes the descriptors it is given and closes them: a run gets a duplicate of a
 * stored file's descriptor, which serves the test's other runs and the checker too. */
static int lend(int fd, struct ev_err *err)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0)
        ev_fail(err, errno, "duplicate a stored file's descriptor");
    return d;
}

static int file_of(struct psc_file *f, const char *name, const struct judge_text *t, int fd,
                   struct ev_err *err)
{
    f->name = name;
    f->fd = fd > 0 ? lend(fd, err) : 0;
    f->data = fd > 0 || !t || !t->present ? "" : t->data;
    f->len = fd > 0 || !t || !t->present ? 0 : t->len;
    return f->fd < 0 ? -1 : 0;
}

static void close_files(struct psc_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (f[i].fd > 0)
            close(f[i].fd);
}

static enum pipe_status run_custom_checker(struct judge_ctx *c, const struct judge_test *t,
                                           int in_fd, int exp_fd, struct judge_test_result *tr,
                                           struct ev_err *err)
{
    const struct judge_program *prog = c->jr->custom;
    struct psc_file files[3] = {{0}};
    if (file_of(&files[0], "input", &t->input, in_fd, err) < 0 ||
        file_of(&files[1], "expected_output", &t->expected, exp_fd, err) < 0) {
        close_files(files, 2);
        return PIPE_INTERNAL;
    }
    files[2] = (struct psc_file){
        .name = "output", .data = tr->run.out.data ? tr->run.out.data : "", .len = tr->run.out.len};
    struct psc_run run = {.argv = c->helper.argv, .fresh_box = true, .files = files, .n_files = 3};
    struct sbx_result res;
    enum pipe_status st =
        stage_run(c->p, c->helper.box, &c->helper.pe, &run, &prog->run, c->ac, &res, err);
    if (st != PIPE_OK)
        return st;
    tr->verdict = verdict_of_checker(&res);
    tr->message = first_line(&res.out);
    if (tr->verdict == VERDICT_CF && !tr->message)
        tr->message = checker_failure("checker", &res);
    sbx_result_free(&res);
    return PIPE_OK;
}

static enum pipe_status check_output(struct judge_ctx *c, const struct judge_test *t, int in_fd,
                                     int exp_fd, struct judge_test_result *tr, struct ev_err *err)
{
    if (c->jr->custom) {
        if (!c->helper.built) {
            tr->verdict = VERDICT_CF;
            tr->message = strdup("the checker did not compile");
            return PIPE_OK;
        }
        return run_custom_checker(c, t, in_fd, exp_fd, tr, err);
    }
    if (!t->expected.present)
        return PIPE_OK; /* a test that only runs: its verdict is its run's */
    struct check_src out = {tr->run.out.data ? tr->run.out.data : "", tr->run.out.len, 0};
    struct check_src exp = {t->expected.data, t->expected.len, exp_fd > 0 ? exp_fd : 0};
    char msg[256];
    struct ev_err cerr = {0};
    switch (checker_compare((enum checker_kind)c->jr->checker, c->jr->eps, &out, &exp, msg,
                            sizeof(msg), &cerr)) {
    case CHECK_AC:
        break;
    case CHECK_WA:
        tr->verdict = VERDICT_WA;
        tr->message = strdup(msg);
        break;
    default:
        tr->verdict = VERDICT_XX;
        tr->message = strdup(cerr.msg);
        break;
    }
    return PIPE_OK;
}

/* in_fd, exp_fd: the test's stored files (-1: its texts are bytes), the caller's to close. */
static enum pipe_status run_test(struct judge_ctx *c, const struct judge_test *t, int in_fd,
                                 int exp_fd, struct judge_test_result *tr, struct ev_err *err)
{
    enum pipe_status st;
    struct psc_run run = {.argv = c->sa.argv,
                          .fresh_box = true,
                          .input = t->input.present && !t->input.file_id ? t->input.data : "",
                          .input_len = t->input.present && !t->input.file_id ? t->input.len : 0};
    if (in_fd >= 0 && (run.input_fd = lend(in_fd, err)) < 0)
        return PIPE_INTERNAL;
    st = stage_run(c->p, c->box, &c->pe, &run, &c->req->run, c->ac, &tr->run, err);
    if (st != PIPE_OK)
        return st;
    tr->ran = true;
    tr->verdict = verdict_of_run(&tr->run);
    if (tr->verdict == VERDICT_AC)
        st = check_output(c, t, in_fd, exp_fd, tr, err);
    return st;
}

/* ---- one test against an interactor --------------------------------------------------------- */

/* The interactor runs in a thread of its own while this one runs the program: each psc_run
 * waits for its run to end. Neither the server nor the helper keeps a copy of a pipe end once
 * it is in its box, so when one side is gone the other sees the end of its input, or EPIPE,
 * and is never left waiting on a peer that is gone. */
struct peer_run {
    struct judge_ctx *c;
    struct psc_run run;
    struct sbx_result res;
    enum pipe_status st;
    struct ev_err err;
};

static void *interactor_thread(void *arg)
{
    struct peer_run *pr = arg;
    struct judge_ctx *c = pr->c;
    pr->st = stage_run(c->p, c->helper.box, &c->helper.pe, &pr->run, &c->jr->interactor->run, c->ac,
                       &pr->res, &pr->err);
    return NULL;
}

/* in_fd, exp_fd as for run_test. */
static enum pipe_status run_interactive(struct judge_ctx *c, const struct judge_test *t, int in_fd,
                                        int exp_fd, struct judge_test_result *tr,
                                        struct ev_err *err)
{
    if (!c->helper.built) {
        tr->verdict = VERDICT_CF;
        tr->message = strdup("the interactor did not compile");
        return PIPE_OK;
    }
    int to_peer[2], to_prog[2]; /* program -> interactor, interactor -> program */
    if (pipe2(to_peer, O_CLOEXEC) < 0)
        return ev_fail(err, errno, "pipe"), PIPE_INTERNAL;
    if (pipe2(to_prog, O_CLOEXEC) < 0) {
        close(to_peer[0]);
        close(to_peer[1]);
        return ev_fail(err, errno, "pipe"), PIPE_INTERNAL;
    }
    struct psc_file files[2] = {{0}};
    if (file_of(&files[0], "input", &t->input, in_fd, err) < 0 ||
        file_of(&files[1], "expected_output", &t->expected, exp_fd, err) < 0) {
        close_files(files, 2);
        for (int i = 0; i < 2; i++)
            close(to_peer[i]), close(to_prog[i]);
        return PIPE_INTERNAL;
    }
    struct peer_run peer = {.c = c,
                            .run = {.argv = c->helper.argv,
                                    .fresh_box = true,
                                    .files = files,
                                    .n_files = 2,
                                    .input_fd = to_peer[0],
                                    .output_fd = to_prog[1]}};
    pthread_t th;
    int e = pthread_create(&th, NULL, interactor_thread, &peer);
    if (e) {
        for (int i = 0; i < 2; i++)
            close(to_peer[i]), close(to_prog[i]);
        close_files(files, 2);
        return ev_fail(err, e, "start the interactor's thread"), PIPE_INTERNAL;
    }
    struct psc_run run = {
        .argv = c->sa.argv, .fresh_box = true, .input_fd = to_prog[0], .output_fd = to_peer[1]};
    /* each psc_run closes the ends it hands over once they are sent: when one side's run is
     * over, the helper holds no copy of its ends either, and the other side sees the end of
     * its input or EPIPE */
    enum pipe_status st = stage_run(c->p, c->box, &c->pe, &run, &c->req->run, c->ac, &tr->run, err);
    pthread_join(th, NULL);
    if (st != PIPE_OK || peer.st != PIPE_OK) {
        if (peer.st == PIPE_OK)
            sbx_result_free(&peer.res);
        if (st == PIPE_OK) {
            sbx_result_free(&tr->run);
            *err = peer.err;
            st = peer.st;
        }
        return st;
    }
    tr->ran = true;
    /* The program's own limits first (the interactor's answer to a program that ran out of
     * time or memory is only a consequence); then the interactor's WA or PE: a program that
     * broke the protocol is judged by the interactor, whatever happened to it after (killed by
     * SIGPIPE, an end of input it did not expect); then an interactor that failed (the test
     * cannot be judged, whatever the program did after); then the program's crash. */
    enum verdict iv = verdict_of_checker(&peer.res), pv = verdict_of_run(&tr->run);
    if (pv == VERDICT_XX || peer.res.status == SBX_XX)
        tr->verdict = VERDICT_XX;
    else if (pv == VERDICT_TLE || pv == VERDICT_MLE)
        tr->verdict = pv;
    else if (iv != VERDICT_AC)
        tr->verdict = iv;
    else
        tr->verdict = pv;
    tr->message = first_line(&peer.res.err);
    if (tr->verdict == VERDICT_CF && !tr->message)
        tr->message = checker_failure("interactor", &peer.res);
    if (tr->verdict == VERDICT_XX && !tr->message)
        tr->message = strdup(peer.res.status == SBX_XX ? peer.res.message : tr->run.message);
    sbx_result_free(&peer.res);
    return PIPE_OK;
}

/* One test: its stored files are opened once, for its run and its checker or interactor. */
static enum pipe_status judge_test(struct judge_ctx *c, const struct judge_test *t,
                                   struct judge_test_result *tr, struct ev_err *err)
{
    int in_fd = -1, exp_fd = -1;
    struct ev_err ferr = {0};
    enum pipe_status st = PIPE_OK;
    if (open_text(c->p, &t->input, &in_fd, &ferr) < 0 ||
        open_text(c->p, &t->expected, &exp_fd, &ferr) < 0) {
        /* a file deleted while the request waited: this test cannot be judged */
        tr->verdict = VERDICT_XX;
        tr->message = strdup(ferr.msg);
    } else {
        st = c->jr->interactor ? run_interactive(c, t, in_fd, exp_fd, tr, err)
                               : run_test(c, t, in_fd, exp_fd, tr, err);
    }
    if (in_fd >= 0)
        close(in_fd);
    if (exp_fd >= 0)
        close(exp_fd);
    return st;
}

/* ---- the request ---------------------------------------------------------------------------- */

#define JUDGE_OUTPUT_FACTOR 8

static void drop_output(struct sbx_output *o)
{
    if (!o->len)
        return;
    o->len = 0;
    o->data[0] = '\0';
    o->truncated = true;
}

static void keep_within(struct sbx_result *r, uint64_t *kept, uint64_t budget)
{
    uint64_t n = r->out.len + r->err.len;
    if (*kept + n <= budget) {
        *kept += n;
        return;
    }
    drop_output(&r->out);
    drop_output(&r->err);
}

enum pipe_status judge_in_box(struct pipeline *p, uint32_t box, const struct exec_request *req,
                              struct abort_ctx *ac, struct exec_outcome *out, struct ev_err *err)
{
    const struct judge_request *jr = req->judge;
    struct judge_outcome *jo = calloc(1, sizeof(*jo));
    if (jo)
        jo->tests = calloc(jr->n_tests ? jr->n_tests : 1, sizeof(*jo->tests));
    if (!jo || !jo->tests) {
        free(jo);
        return ev_fail(err, ENOMEM, "judge outcome"), PIPE_INTERNAL;
    }
    jo->n_tests = jr->n_tests;
    out->judge = jo;
    for (size_t i = 0; i < jr->n_tests; i++)
        jo->tests[i].verdict = VERDICT_SKIPPED;
    jo->verdict = VERDICT_SKIPPED;

    struct judge_ctx c = {.p = p, .req = req, .jr = jr, .ac = ac, .box = box};
    program_env_init(&c.pe, req->rt);
    script_argv_init(&c.sa, c.pe.bash, req->rt->run_script, "/runtime/run.sh");
    struct build_request b = {req->source, req->source_len, req->is_project, &req->compile};
    bool built;
    enum pipe_status st = stage_build(p, box, &c.pe, &b, ac, out, &built, err);
    if (st != PIPE_OK || !built)
        goto done; /* every test SKIPPED: the build's stages say why */
    const struct judge_program *hp = jr->interactor ? jr->interactor : jr->custom;
    if (hp && (st = helper_build(p, hp, ac, jo, &c.helper, err)) != PIPE_OK)
        goto done;
    bool failed = false;
    jo->verdict = VERDICT_AC;
    /* Each test's output is kept for the answer, up to MAX_OUTPUT_SIZE per stream as in any
     * run; past JUDGE_OUTPUT_FACTOR times that in all, a test's output is dropped once it is
     * judged (and marked truncated), so that a thousand tests cannot hold gigabytes. */
    uint64_t kept = 0, budget = (uint64_t)JUDGE_OUTPUT_FACTOR * p->cfg->max_output_bytes;
    for (size_t i = 0; i < jr->n_tests && st == PIPE_OK; i++) {
        struct judge_test_result *tr = &jo->tests[i];
        if (failed && jr->stop_on_first_failure)
            continue; /* SKIPPED */
        tr->verdict = VERDICT_AC;
        st = judge_test(&c, &jr->tests[i], tr, err);
        if (st == PIPE_OK && tr->verdict != VERDICT_AC && !failed) {
            failed = true;
            jo->verdict = tr->verdict;
        }
        if (tr->ran)
            keep_within(&tr->run, &kept, budget);
    }
done:
    helper_close(p, &c.helper);
    script_argv_free(&c.sa);
    program_env_free(&c.pe);
    return st;
}
