/* The run options of judge mode through the privsep client, as the server uses them: the
 * helper is started as `envicutor serve` starts it (root, its socket on descriptor 3), the
 * client drops to uid 65534 and calls psc_run.
 *
 * - a fresh box: a run sees what an earlier run left and nothing it changes outlives it;
 * - files in a fresh box, from memory and from a descriptor, with their exact bytes;
 * - a regular file no box can write reaches the program as stdin without a copy (the program
 *   sees the host file's inode), a file a box could write is copied;
 * - an interactive pair: two concurrent runs in two boxes, each one's stdout piped to the
 *   other's stdin; they talk, and when one side ends the other sees end of file or EPIPE at
 *   once (psc_run closes the ends it was given once they are sent: no copy is left open). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "privsep/client.h"
#include "privsep/helper.h"

#define NOBODY 65534
#define FIRST_BOX_UID 60000 /* the sandbox's default: box N runs as 60000 + N */
#define WALL_US (20 * 1000000ull)

static char dir[64], runtimes[128], ro_path[128], rw_path[128], boxed_path[128];
static struct psc *client;
static uint32_t boxes[2];
static char *const env[] = {"PATH=/usr/bin:/bin", NULL};

static struct ps_limits limits(void)
{
    return (struct ps_limits){.wall_time_us = WALL_US,
                              .cpu_time_us = 10000000,
                              .memory_kb = 256000,
                              .max_open_files = 64,
                              .max_file_size_kb = 4096,
                              .max_processes = 16,
                              .max_output_bytes = 1 << 20,
                              .tmp_kb = 1024};
}

/* Runs `sh -c script` in box with the options of *opt (argv, envp and limits are set here). */
static void run_in(uint32_t box, const char *script, struct psc_run *opt, struct sbx_result *res)
{
    char *const argv[] = {"sh", "-c", (char *)script, NULL};
    opt->argv = argv;
    opt->envp = env;
    opt->limits = limits();
    bool aborted;
    struct ev_err err;
    int rc = psc_run(client, box, opt, NULL, NULL, res, &aborted, &err);
    if (rc < 0)
        fail_msg("psc_run: %s", err.msg);
    if (res->status != SBX_OK)
        fprintf(stderr, "run of '%s': status %d, %s\nstderr: %s\n", script, res->status,
                res->message, res->err.data);
}

static void assert_run(uint32_t box, const char *script, struct psc_run opt, const char *expect)
{
    struct sbx_result res;
    run_in(box, script, &opt, &res);
    assert_int_equal(res.status, SBX_OK);
    assert_string_equal(res.out.data, expect);
    sbx_result_free(&res);
}

/* ---- a fresh box and its files ---------------------------------------------------------- */

static void test_a_fresh_box_shows_the_box_and_keeps_nothing(void **state)
{
    (void)state;
    struct ev_err err;
    assert_int_equal(psc_write_file(client, boxes[0], "source", 0644, "kept\n", 5, &err), 0);
    assert_run(boxes[0], "cp /bin/echo say; mkdir d; echo deep > d/f", (struct psc_run){0}, "");
    int stored = open(ro_path, O_RDONLY | O_CLOEXEC);
    assert_true(stored >= 0);
    const struct psc_file files[] = {{.name = "alpha", .data = "a\0b", .len = 3},
                                     {.name = "stored", .fd = stored}};
    assert_run(boxes[0],
               "./say ran; cat source d/f stored; od -An -c alpha | tr -s ' '; "
               "rm source say; rm -r d; echo x > new; echo y > /tmp/y; "
               "(echo more >> stored) 2>/dev/null || echo stored is read-only",
               (struct psc_run){.fresh_box = true, .files = files, .n_files = 2},
               "ran\nkept\ndeep\nstored input\n a \\0 b\nstored is read-only\n");
    /* psc_run took the descriptor and closed it once sent */
    assert_int_equal(fcntl(stored, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
    const char *look = "ls -A; cat source d/f; ls -A /tmp | wc -l";
    const char *original = "d\nsay\nsource\nkept\ndeep\n0\n";
    assert_run(boxes[0], look, (struct psc_run){.fresh_box = true}, original);
    assert_run(boxes[0], look, (struct psc_run){0}, original);
    /* the stored file is unchanged */
    char buf[64] = "";
    int fd = open(ro_path, O_RDONLY | O_CLOEXEC);
    assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
    close(fd);
    assert_string_equal(buf, "stored input\n");
    assert_run(boxes[0], "rm -r d say source", (struct psc_run){0}, "");
}

static void test_files_are_for_a_fresh_box_only_and_have_plain_names(void **state)
{
    (void)state;
    const struct psc_file bad_name[] = {{.name = "../x", .data = "x", .len = 1}};
    const struct psc_file fine[] = {{.name = "x", .data = "x", .len = 1}};
    struct psc_run opts[] = {{.fresh_box = true, .files = bad_name, .n_files = 1},
                             {.files = fine, .n_files = 1}};
    for (size_t i = 0; i < 2; i++) {
        char *const argv[] = {"true", NULL};
        opts[i].argv = argv;
        opts[i].envp = env;
        opts[i].limits = limits();
        struct sbx_result res;
        bool aborted;
        struct ev_err err;
        assert_int_equal(psc_run(client, boxes[0], &opts[i], NULL, NULL, &res, &aborted, &err), -1);
    }
}

/* ---- stdin from a file ------------------------------------------------------------------ */

/* What the program sees on descriptor 0: the inode and the contents. */
static void stdin_seen(const char *path, char *out, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char three[3];
    assert_int_equal(read(fd, three, 3), 3); /* the program reads from the start anyway */
    struct sbx_result res;
    struct psc_run opt = {.input_fd = fd};
    run_in(boxes[0],
           "stat -L -c %i /proc/self/fd/0; cat; "
           "(echo x >> /proc/self/fd/0) 2>/dev/null && echo wrote; true",
           &opt, &res);
    assert_int_equal(res.status, SBX_OK);
    snprintf(out, size, "%s", res.out.data);
    sbx_result_free(&res);
}

static void test_a_stored_file_as_stdin_is_not_copied(void **state)
{
    (void)state;
    struct stat st;
    char out[256], expect[256];
    assert_int_equal(stat(ro_path, &st), 0);
    stdin_seen(ro_path, out, sizeof(out));
    snprintf(expect, sizeof(expect), "%llu\nstored input\n", (unsigned long long)st.st_ino);
    assert_string_equal(out, expect);
    /* a file others may write, and one a box's user owns, are copied: another inode */
    const char *copied[] = {rw_path, boxed_path};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(stat(copied[i], &st), 0);
        stdin_seen(copied[i], out, sizeof(out));
        snprintf(expect, sizeof(expect), "%llu\n", (unsigned long long)st.st_ino);
        assert_true(strncmp(out, expect, strlen(expect)) != 0);
        assert_non_null(strstr(out, "\nstored input\n"));
        assert_null(strstr(out, "wrote"));
    }
}

/* ---- an interactive pair ---------------------------------------------------------------- */

struct side {
    uint32_t box;
    const char *script;
    int in, out;
    struct sbx_result res;
};

static void *run_side(void *arg)
{
    struct side *s = arg;
    struct psc_run opt = {.input_fd = s->in, .output_fd = s->out};
    run_in(s->box, s->script, &opt, &s->res);
    return NULL;
}

/* The program and the interactor, each in its box, each one's stdout the other's stdin. */
static void run_pair(struct side *prog, struct side *inter)
{
    int a[2], b[2]; /* a: program -> interactor, b: interactor -> program */
    assert_int_equal(pipe2(a, O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_CLOEXEC), 0);
    *prog = (struct side){.box = boxes[0], .script = prog->script, .in = b[0], .out = a[1]};
    *inter = (struct side){.box = boxes[1], .script = inter->script, .in = a[0], .out = b[1]};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_side, prog), 0);
    run_side(inter);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* psc_run took all four ends: none is open here any more */
    int ends[4] = {a[0], a[1], b[0], b[1]};
    for (int i = 0; i < 4; i++)
        assert_int_equal(fcntl(ends[i], F_GETFD), -1);
    for (int i = 0; i < 2; i++) {
        struct side *s = i ? inter : prog;
        /* stdout went to the pipe, not into the result */
        assert_int_equal(s->res.out.len, 0);
        assert_false(s->res.wall_limit_exceeded);
    }
}

static void test_an_interactor_and_a_program_talk(void **state)
{
    (void)state;
    struct side prog = {.script = "read n; echo $((n * 2)); read m; echo $((m + 1)); "
                                  "read last; echo \"program got $last\" >&2"},
                inter = {.script = "echo 21; read a; echo 41; read b; echo done; "
                                   "echo \"interactor got $a $b\" >&2; [ $a = 42 ] && [ $b = 42 ]"};
    run_pair(&prog, &inter);
    assert_int_equal(prog.res.status, SBX_OK);
    assert_int_equal(inter.res.status, SBX_OK);
    assert_string_equal(inter.res.err.data, "interactor got 42 42\n");
    assert_string_equal(prog.res.err.data, "program got done\n");
    sbx_result_free(&prog.res);
    sbx_result_free(&inter.res);
}

/* When one side exits, the other reads end of file (or gets EPIPE when it writes) at once: no
 * one else holds an end of the pipes. Without that, the survivor would wait for its wall
 * limit (and be reported as having exceeded it). */
static void test_when_one_side_exits_the_other_ends(void **state)
{
    (void)state;
    /* the interactor quits at once: the program reading to the end gets end of file */
    struct side prog = {.script = "cat > /dev/null; echo eof >&2"}, inter = {.script = "exit 3"};
    run_pair(&prog, &inter);
    assert_int_equal(prog.res.status, SBX_OK);
    assert_string_equal(prog.res.err.data, "eof\n");
    assert_int_equal(inter.res.exit_code, 3);
    sbx_result_free(&prog.res);
    sbx_result_free(&inter.res);
    /* ... and the program writing without end is killed by SIGPIPE */
    prog = (struct side){.script = "exec yes"};
    inter = (struct side){.script = "exit 0"};
    run_pair(&prog, &inter);
    assert_int_equal(prog.res.status, SBX_SG);
    assert_int_equal(prog.res.exit_signal, SIGPIPE);
    sbx_result_free(&prog.res);
    sbx_result_free(&inter.res);
    /* the program quits at once: the interactor reading to the end gets end of file */
    prog = (struct side){.script = "exit 0"};
    inter = (struct side){.script = "cat > /dev/null; echo eof >&2"};
    run_pair(&prog, &inter);
    assert_int_equal(inter.res.status, SBX_OK);
    assert_string_equal(inter.res.err.data, "eof\n");
    sbx_result_free(&prog.res);
    sbx_result_free(&inter.res);
}

/* Runs script in boxes[0] with stdout to a pipe, and sends sig once the program wrote "up". */
static void signal_run(const char *script, int sig, struct sbx_result *res)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    struct side prog = {.box = boxes[0], .script = script, .out = p[1]};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_side, &prog), 0);
    /* once it wrote, the program runs: a signal sent before its exec would be dropped */
    char buf[8] = "";
    ssize_t n;
    while ((n = read(p[0], buf, sizeof(buf) - 1)) < 0 && errno == EINTR)
        ;
    assert_int_equal(n, 3);
    psc_signal(client, boxes[0], sig);
    assert_int_equal(pthread_join(t, NULL), 0);
    close(p[0]);
    *res = prog.res;
}

/* psc_signal during a run reaches every process of the run (the program's child too) but the
 * box's init, which reports how the program ended. */
static void test_a_signal_reaches_every_process_of_the_run(void **state)
{
    (void)state;
    struct sbx_result res;
    /* the shell traps it and reports how its child, the sleep, ended: by the same signal. "up"
     * comes once the child runs sleep: before its exec the forked shell still has the trap, and
     * would take the signal as its parent does. */
    signal_run("trap 'echo trapped >&2' TERM; sleep 60 & "
               "while read -r c < /proc/$!/comm; [ \"$c\" != sleep ]; do :; done; echo up; "
               "wait; wait $!; echo \"sleep: $?\" >&2",
               SIGTERM, &res);
    assert_int_equal(res.status, SBX_OK);
    /* (the shell may also report the ended job as "Terminated", or not: it depends on when it
     * notices it) */
    assert_true(strncmp(res.err.data, "trapped\n", 8) == 0);
    assert_non_null(strstr(res.err.data, "\nsleep: 143\n"));
    sbx_result_free(&res);
    signal_run("echo up; sleep 60", SIGKILL, &res);
    assert_int_equal(res.status, SBX_SG);
    assert_int_equal(res.exit_signal, SIGKILL);
    sbx_result_free(&res);
}

/* A stdout or stderr descriptor must be a pipe's write end. */
static void test_stdout_must_be_the_write_end_of_a_pipe(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int not_pipes[] = {p[0], open(ro_path, O_RDONLY | O_CLOEXEC)};
    for (int i = 0; i < 2; i++) {
        char *const argv[] = {"echo", "hi", NULL};
        struct psc_run opt = {
            .argv = argv, .envp = env, .limits = limits(), .output_fd = not_pipes[i]};
        struct sbx_result res;
        bool aborted;
        struct ev_err err;
        assert_int_equal(psc_run(client, boxes[0], &opt, NULL, NULL, &res, &aborted, &err), -1);
        assert_non_null(strstr(err.msg, "run: stdout: not the write end of a pipe"));
    }
    /* the same for a stderr descriptor, named as such (stdout a good pipe's write end) */
    for (int i = 0; i < 2; i++) {
        int q[2];
        assert_int_equal(pipe2(q, O_CLOEXEC), 0);
        char *const argv[] = {"echo", "hi", NULL};
        struct psc_run opt = {.argv = argv,
                              .envp = env,
                              .limits = limits(),
                              .output_fd = q[1],
                              .error_fd = i ? open(ro_path, O_RDONLY | O_CLOEXEC) : q[0]};
        struct sbx_result res;
        bool aborted;
        struct ev_err err;
        assert_int_equal(psc_run(client, boxes[0], &opt, NULL, NULL, &res, &aborted, &err), -1);
        assert_non_null(strstr(err.msg, "run: stderr: not the write end of a pipe"));
        if (i)
            close(q[0]);
    }
    close(p[1]);
}

/* ---- set-up: the helper as root, the client as nobody ----------------------------------- */

static int open_boxes(void **state)
{
    (void)state;
    struct ev_err err;
    for (int i = 0; i < 2; i++)
        if (psc_open_box(client, 4096, 256, &boxes[i], &err) < 0) {
            fprintf(stderr, "open a box: %s\n", err.msg);
            return -1;
        }
    return 0;
}

static int close_boxes(void **state)
{
    (void)state;
    struct ev_err err;
    int rc = 0;
    for (int i = 0; i < 2; i++)
        rc |= psc_close_box(client, boxes[i], &err);
    return rc;
}

static void make_file(const char *path, mode_t mode, uid_t owner)
{
    const char *text = "stored input\n";
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 || write_full(fd, text, strlen(text)) < 0 || fchmod(fd, mode) < 0 ||
        fchown(fd, owner, owner) < 0) {
        perror(path);
        exit(1);
    }
    close(fd);
}

static int client_main(int sock)
{
    if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
        setresuid(NOBODY, NOBODY, NOBODY) < 0) {
        perror("drop to nobody");
        return 1;
    }
    struct ev_err err;
    client = psc_start(sock, &err);
    if (!client) {
        fprintf(stderr, "psc_start: %s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_fresh_box_shows_the_box_and_keeps_nothing),
        cmocka_unit_test(test_files_are_for_a_fresh_box_only_and_have_plain_names),
        cmocka_unit_test(test_a_stored_file_as_stdin_is_not_copied),
        cmocka_unit_test(test_an_interactor_and_a_program_talk),
        cmocka_unit_test(test_when_one_side_exits_the_other_ends),
        cmocka_unit_test(test_a_signal_reaches_every_process_of_the_run),
        cmocka_unit_test(test_stdout_must_be_the_write_end_of_a_pipe),
    };
    int rc = cmocka_run_group_tests(tests, open_boxes, close_boxes);
    psc_stop(client);
    return rc;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_privsep_runs: needs root\n");
        return 1;
    }
    snprintf(dir, sizeof(dir), "/tmp/envicutor-runs-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) < 0) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(runtimes, sizeof(runtimes), "%s/runtimes", dir);
    snprintf(ro_path, sizeof(ro_path), "%s/stored", dir);
    snprintf(rw_path, sizeof(rw_path), "%s/writable", dir);
    snprintf(boxed_path, sizeof(boxed_path), "%s/box-owned", dir);
    make_file(ro_path, 0644, 0);
    make_file(rw_path, 0666, 0);
    make_file(boxed_path, 0644, FIRST_BOX_UID);
    if (mkdir(runtimes, 0755) < 0) {
        perror(runtimes);
        return 1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    fflush(NULL);
    pid_t helper = fork();
    if (helper == 0) {
        close(sv[0]);
        if (dup2(sv[1], HELPER_FD) < 0)
            _exit(127);
        char *argv[] = {"privileged-helper", runtimes, NULL};
        _exit(helper_process_main(2, argv));
    }
    close(sv[1]);
    pid_t cl = helper < 0 ? -1 : fork();
    if (cl == 0)
        _exit(client_main(sv[0]));
    close(sv[0]);
    int st_client = -1, st_helper = -1;
    while (cl > 0 && waitpid(cl, &st_client, 0) < 0 && errno == EINTR)
        ;
    while (helper > 0 && waitpid(helper, &st_helper, 0) < 0 && errno == EINTR)
        ;
    unlink(ro_path);
    unlink(rw_path);
    unlink(boxed_path);
    rmdir(runtimes);
    rmdir(dir);
    if (helper < 0 || cl < 0) {
        perror("fork");
        return 1;
    }
    if (!WIFEXITED(st_helper) || WEXITSTATUS(st_helper) != 0) {
        fprintf(stderr, "test_privsep_runs: the helper ended with status %#x\n", st_helper);
        return 1;
    }
    return WIFEXITED(st_client) ? WEXITSTATUS(st_client) : 1;
}
