/* A hostile client of the privileged helper: what a compromised server process could send it.
 *
 * The helper is started as `envicutor serve` starts it (helper_process_main, root, its socket
 * on descriptor 3); the client then drops to uid 65534 and speaks the protocol directly, with
 * descriptors it may legitimately hold but that must not give it more than its own rights: an
 * O_PATH descriptor of a root-only file, a write-only descriptor, a directory, a pipe, a
 * socket, and descriptor counts the message type does not allow. Each must be refused with a
 * message that says why, and the helper must go on serving. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "privsep/helper.h"
#include "privsep/protocol.h"
#include "sandbox/sandbox.h"

#define NOBODY 65534
#define SECRET "root-only canary: 5f0c2a\n"
#define WO_SECRET "write-only canary: 91be47\n"

static char dir[64], secret_path[128], wonly_path[128], input_path[128], runtimes[128];
static int sock = -1;
static uint32_t box;
static uint64_t next_id = 1;

/* ---- the protocol, by hand ------------------------------------------------------------- */

static void send_with(const void *msg, size_t len, const int *fds, int n_fds)
{
    struct iovec iov = {(void *)msg, len};
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n_fds > 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)n_fds * sizeof(int));
        struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN((size_t)n_fds * sizeof(int));
        memcpy(CMSG_DATA(h), fds, (size_t)n_fds * sizeof(int));
    }
    ssize_t r;
    while ((r = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    assert_int_equal(r, (ssize_t)len);
}

/* Sends one request and waits for its reply; *out_fd is the reply's descriptor or -1. */
static void call(struct ps_request *req, size_t len, const int *fds, int n_fds,
                 struct ps_reply *rep, int *out_fd)
{
    req->h.magic = PS_MAGIC;
    req->h.req_id = next_id++;
    send_with(req, len, fds, n_fds);
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {rep, sizeof(*rep)};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n;
    while ((n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    assert_int_equal(n, (ssize_t)sizeof(*rep));
    *out_fd = -1;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h))
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
            memcpy(out_fd, CMSG_DATA(h), sizeof(int));
    assert_int_equal(rep->magic, PS_MAGIC);
    assert_true(rep->req_id == req->h.req_id);
}

static size_t run_request(struct ps_request *req, const char *cmd, uint32_t has_stdin)
{
    memset(req, 0, PS_MAX_MSG);
    req->h.type = PS_RUN;
    req->h.box = box;
    struct ps_run *r = &req->u.run;
    r->limits = (struct ps_limits){.wall_time_us = 20000000,
                                   .cpu_time_us = 10000000,
                                   .memory_kb = 256000,
                                   .max_open_files = 64,
                                   .max_file_size_kb = 1024,
                                   .max_processes = 16,
                                   .max_output_bytes = 1 << 20,
                                   .tmp_kb = 1024};
    r->has_stdin = has_stdin;
    /* argv: sh -c CMD; envp: PATH */
    const char *strings[] = {"sh", "-c", cmd, "PATH=/usr/bin:/bin"};
    size_t head = offsetof(struct ps_request, u) + sizeof(*r), off = head;
    for (size_t i = 0; i < 4; i++) {
        size_t n = strlen(strings[i]) + 1;
        memcpy((char *)req + off, strings[i], n);
        off += n;
    }
    r->argc = 3;
    r->envc = 1;
    r->strings_len = (uint32_t)(off - head);
    return off;
}

/* The reply's stdout, NUL-terminated, in a static buffer. */
static const char *stdout_of(const struct ps_reply *rep, int out_fd)
{
    static char buf[4096];
    buf[0] = '\0';
    if (out_fd < 0)
        return buf;
    size_t n = rep->res.out_len < sizeof(buf) - 1 ? rep->res.out_len : sizeof(buf) - 1;
    ssize_t r;
    while ((r = pread(out_fd, buf, n, 0)) < 0 && errno == EINTR)
        ;
    assert_true(r >= 0);
    buf[r] = '\0';
    close(out_fd);
    return buf;
}

/* Runs CMD in the box with the descriptors given; returns its stdout ("" when refused). */
static const char *run(const char *cmd, uint32_t has_stdin, const int *fds, int n_fds,
                       struct ps_reply *rep)
{
    struct ps_request *req = calloc(1, PS_MAX_MSG);
    assert_non_null(req);
    size_t len = run_request(req, cmd, has_stdin);
    int out_fd;
    call(req, len, fds, n_fds, rep, &out_fd);
    free(req);
    return stdout_of(rep, out_fd);
}

static void write_file(const char *name, const int *fds, int n_fds, struct ps_reply *rep)
{
    struct ps_request req;
    memset(&req, 0, sizeof(req));
    req.h.type = PS_WRITE_FILE;
    req.h.box = box;
    snprintf(req.u.write.name, sizeof(req.u.write.name), "%s", name);
    req.u.write.mode = 0644;
    int out_fd;
    call(&req, offsetof(struct ps_request, u) + sizeof(req.u.write), fds, n_fds, rep, &out_fd);
    assert_int_equal(out_fd, -1);
}

static int memfd_with(const char *text)
{
    int fd = memfd_create("hostile-input", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_true(write_full(fd, text, strlen(text)) == (ssize_t)strlen(text));
    return fd; /* its offset at the end, as the server leaves it */
}

static void assert_refused(const struct ps_reply *rep, const char *why)
{
    if (rep->rc != -1 || !strstr(rep->msg, why))
        fail_msg("expected a refusal saying \"%s\", got rc %d: \"%s\"", why, rep->rc, rep->msg);
}

/* A valid request right after a refused one is served as usual. */
static void assert_still_serving(void)
{
    int fd = memfd_with("still serving\n");
    struct ps_reply rep;
    const char *out = run("cat", 1, &fd, 1, &rep);
    close(fd);
    assert_int_equal(rep.rc, 0);
    assert_int_equal(rep.res.status, SBX_OK);
    assert_string_equal(out, "still serving\n");
}

/* ---- the tests ------------------------------------------------------------------------- */

static void test_the_client_cannot_read_the_root_only_files_itself(void **state)
{
    (void)state;
    assert_int_equal(geteuid(), NOBODY);
    assert_int_equal(open(secret_path, O_RDONLY | O_CLOEXEC), -1);
    assert_int_equal(errno, EACCES);
    assert_int_equal(open(wonly_path, O_RDONLY | O_CLOEXEC), -1);
    assert_int_equal(errno, EACCES);
}

static void test_a_readable_stdin_reaches_the_program_whole(void **state)
{
    (void)state;
    assert_still_serving(); /* a memfd whose offset is at its end */
    /* a file whose offset the client moved: the program reads it from its start, and the
     * client's offset is left where it was */
    int fd = open(input_path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char three[3];
    assert_int_equal(read(fd, three, 3), 3);
    struct ps_reply rep;
    const char *out = run("cat; echo; stat -L -c %F /dev/stdin", 1, &fd, 1, &rep);
    assert_int_equal(rep.rc, 0);
    assert_string_equal(out, "public input\n\nregular file\n");
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 3);
    close(fd);
}

/* A sealed memfd, as the server sends, reaches the program as it is; the same contents in a
 * memfd the client could still write are copied first, so a write after sending changes
 * nothing the program reads. */
static void test_a_sealed_memfd_is_given_as_it_is_and_an_unsealed_one_copied(void **state)
{
    (void)state;
    for (int sealed = 0; sealed < 2; sealed++) {
        int fd = memfd_create("stdin", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "abc\n", 4), 4);
        if (sealed)
            assert_int_equal(fcntl(fd, F_ADD_SEALS, PS_STDIN_SEALS), 0);
        struct ps_reply rep;
        /* the program reads its stdin, and reports whether it is the very memfd sent */
        const char *out =
            run("cat; readlink /proc/self/fd/0 | sed 's/ (deleted)//'", 1, &fd, 1, &rep);
        assert_int_equal(rep.rc, 0);
        assert_string_equal(out, sealed ? "abc\n/memfd:stdin\n" : "abc\n/memfd:envicutor-stdin\n");
        close(fd);
    }
}

static void test_an_o_path_stdin_of_a_root_only_file_is_refused(void **state)
{
    (void)state;
    int fd = open(secret_path, O_PATH | O_CLOEXEC);
    assert_true(fd >= 0); /* O_PATH needs no read permission */
    struct ps_reply rep;
    const char *out = run("cat", 1, &fd, 1, &rep);
    close(fd);
    assert_null(strstr(out, "canary"));
    assert_refused(&rep, "run: stdin: an O_PATH descriptor");
    assert_still_serving();
}

static void test_a_write_only_stdin_is_refused(void **state)
{
    (void)state;
    int fd = open(wonly_path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct ps_reply rep;
    const char *out = run("cat", 1, &fd, 1, &rep);
    close(fd);
    assert_null(strstr(out, "canary"));
    assert_refused(&rep, "run: stdin: the descriptor is not open for reading");
    assert_still_serving();
}

static void test_a_directory_or_socket_as_stdin_is_refused(void **state)
{
    (void)state;
    int fds[2], sv[2];
    fds[0] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fds[0] >= 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(write(sv[1], "socket\n", 7), 7);
    fds[1] = sv[0];
    for (int i = 0; i < 2; i++) {
        struct ps_reply rep;
        const char *out = run("cat", 1, &fds[i], 1, &rep);
        assert_string_equal(out, "");
        assert_refused(&rep, "run: stdin: not a regular file");
        assert_still_serving();
        close(fds[i]);
    }
    close(sv[1]);
}

/* A pipe's read end (an interactor's output) is the program's stdin as it is; its write end,
 * which the program could only write into, is refused. */
static void test_a_pipe_as_stdin_is_its_read_end(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(write(p[1], "piped\n", 6), 6);
    struct ps_reply rep;
    const char *out = run("cat; stat -L -c %F /dev/stdin", 1, &p[1], 1, &rep);
    assert_string_equal(out, "");
    assert_refused(&rep, "run: stdin: a pipe's write end");
    assert_still_serving();
    close(p[1]); /* the program reads to the end of the pipe */
    out = run("cat; stat -L -c %F /dev/stdin", 1, &p[0], 1, &rep);
    assert_int_equal(rep.rc, 0);
    assert_string_equal(out, "piped\nfifo\n");
    close(p[0]);
}

/* A stdout descriptor is announced by its flag and must be a pipe's write end; the descriptor
 * count must match stdin, stdout and the files together. */
static void test_a_stdout_descriptor_is_a_pipes_write_end(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    struct ps_request *req = calloc(1, PS_MAX_MSG);
    assert_non_null(req);
    int out_fd;
    struct ps_reply rep;
    int fds[2] = {p[0], p[1]};
    for (int i = 0; i < 2; i++) {
        size_t len = run_request(req, "echo to the pipe", 0);
        req->u.run.flags = PS_RUN_STDOUT_FD;
        call(req, len, &fds[i], 1, &rep, &out_fd);
        if (i == 0) {
            assert_refused(&rep, "run: stdout: not the write end of a pipe");
        } else {
            assert_int_equal(rep.rc, 0);
            assert_int_equal(rep.res.status, SBX_OK);
            assert_true(rep.res.out_len == 0);
        }
        if (out_fd >= 0)
            close(out_fd);
    }
    close(p[1]);
    char buf[64] = "";
    assert_int_equal(read(p[0], buf, sizeof(buf) - 1), 12);
    assert_string_equal(buf, "to the pipe\n");
    /* announced but not sent, and sent but not announced */
    size_t len = run_request(req, "true", 0);
    req->u.run.flags = PS_RUN_STDOUT_FD;
    call(req, len, NULL, 0, &rep, &out_fd);
    assert_refused(&rep, "refused: run: descriptor count does not match");
    len = run_request(req, "true", 1);
    int two[2] = {p[0], p[0]};
    call(req, len, two, 2, &rep, &out_fd);
    assert_refused(&rep, "refused: run: descriptor count does not match");
    assert_still_serving();
    close(p[0]);
    free(req);
}

static void test_a_write_file_source_must_be_a_regular_file_open_for_reading(void **state)
{
    (void)state;
    int p[2], sv[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct {
        int fd;
        const char *why;
    } bad[] = {
        {open(secret_path, O_PATH | O_CLOEXEC), "write-file: the source: an O_PATH descriptor"},
        {open(wonly_path, O_WRONLY | O_CLOEXEC),
         "write-file: the source: the descriptor is not open for reading"},
        {open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC),
         "write-file: the source: not a regular file"},
        {p[0], "write-file: the source: not a regular file"},
        {sv[0], "write-file: the source: not a regular file"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_true(bad[i].fd >= 0);
        struct ps_reply rep;
        write_file("copied", &bad[i].fd, 1, &rep);
        assert_refused(&rep, bad[i].why);
        close(bad[i].fd);
        assert_still_serving();
    }
    close(p[1]);
    close(sv[1]);
    /* nothing was created by the refused requests: the name is still free */
    int fd = memfd_with("the real source\n");
    struct ps_reply rep;
    write_file("copied", &fd, 1, &rep);
    close(fd);
    assert_int_equal(rep.rc, 0);
    const char *out = run("cat copied; rm copied", 0, NULL, 0, &rep);
    assert_int_equal(rep.rc, 0);
    assert_string_equal(out, "the real source\n");
}

static void test_two_descriptors_where_one_is_expected_are_refused(void **state)
{
    (void)state;
    int fds[2] = {memfd_with("first\n"), open(input_path, O_RDONLY | O_CLOEXEC)};
    assert_true(fds[1] >= 0);
    struct ps_reply rep;
    const char *out = run("cat", 1, fds, 2, &rep);
    assert_string_equal(out, "");
    assert_refused(&rep, "refused: run: descriptor count does not match");
    assert_still_serving();
    write_file("two", fds, 2, &rep);
    assert_refused(&rep, "refused: malformed write-file message");
    assert_still_serving();
    close(fds[0]);
    close(fds[1]);
}

static void test_a_descriptor_where_none_is_expected_is_refused(void **state)
{
    (void)state;
    int fd = memfd_with("unexpected\n");
    struct ps_reply rep;
    /* a run that declares no stdin */
    const char *out = run("cat", 0, &fd, 1, &rep);
    assert_string_equal(out, "");
    assert_refused(&rep, "refused: run: descriptor count does not match");
    assert_still_serving();
    /* opening a box */
    struct ps_request req;
    memset(&req, 0, sizeof(req));
    req.h.type = PS_OPEN_BOX;
    req.u.open = (struct ps_open_box){.disk_kb = 4096, .max_inodes = 256};
    int out_fd;
    call(&req, offsetof(struct ps_request, u) + sizeof(req.u.open), &fd, 1, &rep, &out_fd);
    assert_refused(&rep, "refused: malformed open-box message");
    assert_still_serving();
    /* closing a box (ours: it must survive the refused request) */
    memset(&req, 0, sizeof(req));
    req.h.type = PS_CLOSE_BOX;
    req.h.box = box;
    call(&req, sizeof(req.h), &fd, 1, &rep, &out_fd);
    assert_refused(&rep, "refused: unexpected descriptor");
    assert_still_serving();
    close(fd);
}

/* ---- set-up: the helper as root, the client as nobody ----------------------------------- */

static int open_box(void **state)
{
    (void)state;
    struct ps_request req;
    memset(&req, 0, sizeof(req));
    req.h.type = PS_OPEN_BOX;
    req.u.open = (struct ps_open_box){.disk_kb = 4096, .max_inodes = 256};
    struct ps_reply rep;
    int out_fd;
    call(&req, offsetof(struct ps_request, u) + sizeof(req.u.open), NULL, 0, &rep, &out_fd);
    if (rep.rc != 0) {
        fprintf(stderr, "open a box: %s\n", rep.msg);
        return -1;
    }
    box = rep.box;
    return 0;
}

static int close_box(void **state)
{
    (void)state;
    struct ps_request req;
    memset(&req, 0, sizeof(req));
    req.h.type = PS_CLOSE_BOX;
    req.h.box = box;
    struct ps_reply rep;
    int out_fd;
    call(&req, sizeof(req.h), NULL, 0, &rep, &out_fd);
    return rep.rc;
}

static void make_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 || write_full(fd, text, strlen(text)) < 0 || fchmod(fd, mode) < 0) {
        perror(path);
        exit(1);
    }
    close(fd);
}

static int client(void)
{
    if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
        setresuid(NOBODY, NOBODY, NOBODY) < 0) {
        perror("drop to nobody");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_client_cannot_read_the_root_only_files_itself),
        cmocka_unit_test(test_a_readable_stdin_reaches_the_program_whole),
        cmocka_unit_test(test_a_sealed_memfd_is_given_as_it_is_and_an_unsealed_one_copied),
        cmocka_unit_test(test_an_o_path_stdin_of_a_root_only_file_is_refused),
        cmocka_unit_test(test_a_write_only_stdin_is_refused),
        cmocka_unit_test(test_a_directory_or_socket_as_stdin_is_refused),
        cmocka_unit_test(test_a_pipe_as_stdin_is_its_read_end),
        cmocka_unit_test(test_a_stdout_descriptor_is_a_pipes_write_end),
        cmocka_unit_test(test_a_write_file_source_must_be_a_regular_file_open_for_reading),
        cmocka_unit_test(test_two_descriptors_where_one_is_expected_are_refused),
        cmocka_unit_test(test_a_descriptor_where_none_is_expected_is_refused),
    };
    return cmocka_run_group_tests(tests, open_box, close_box);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_helper_protocol: needs root\n");
        return 1;
    }
    snprintf(dir, sizeof(dir), "/tmp/envicutor-hostile-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) < 0) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(secret_path, sizeof(secret_path), "%s/secret", dir);
    snprintf(wonly_path, sizeof(wonly_path), "%s/write-only", dir);
    snprintf(input_path, sizeof(input_path), "%s/input", dir);
    snprintf(runtimes, sizeof(runtimes), "%s/runtimes", dir);
    make_file(secret_path, SECRET, 0600);
    make_file(wonly_path, WO_SECRET, 0622);
    make_file(input_path, "public input\n", 0644);
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
        /* as serve starts it: root, the socket on descriptor 3, nothing else of the client's */
        close(sv[0]);
        if (dup2(sv[1], 3) < 0)
            _exit(127);
        char *argv[] = {"privileged-helper", runtimes, NULL};
        _exit(helper_process_main(2, argv));
    }
    close(sv[1]);
    pid_t cl = helper < 0 ? -1 : fork();
    if (cl == 0) {
        sock = sv[0];
        _exit(client());
    }
    close(sv[0]); /* the helper sees end of file when the client is done */
    int st_client = -1, st_helper = -1;
    while (cl > 0 && waitpid(cl, &st_client, 0) < 0 && errno == EINTR)
        ;
    while (helper > 0 && waitpid(helper, &st_helper, 0) < 0 && errno == EINTR)
        ;
    unlink(secret_path);
    unlink(wonly_path);
    unlink(input_path);
    rmdir(runtimes);
    rmdir(dir);
    if (helper < 0 || cl < 0) {
        perror("fork");
        return 1;
    }
    if (!WIFEXITED(st_helper) || WEXITSTATUS(st_helper) != 0) {
        fprintf(stderr, "test_helper_protocol: the helper ended with status %#x\n", st_helper);
        return 1;
    }
    return WIFEXITED(st_client) ? WEXITSTATUS(st_client) : 1;
}
