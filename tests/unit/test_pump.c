/* Unit tests of the pump (common/pump.c), the poll loop both supervisors use: real child
 * processes and pipes, no deadline that a slow machine could miss. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/pump.h"

static char pattern(size_t i)
{
    return (char)('a' + (i * 7 + i / 13) % 26);
}

/* A child that writes n bytes of the pattern to fd and then pauses (hold) or exits. */
static pid_t child_writing(int pipefd[2], size_t n, bool hold, int *pidfd)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        char buf[4096];
        for (size_t off = 0; off < n;) {
            size_t k = n - off < sizeof(buf) ? n - off : sizeof(buf);
            for (size_t i = 0; i < k; i++)
                buf[i] = pattern(off + i);
            if (write_full(pipefd[1], buf, k) < 0)
                _exit(1);
            off += k;
        }
        while (hold)
            pause();
        _exit(0);
    }
    close(pipefd[1]);
    *pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    assert_true(*pidfd >= 0);
    return pid;
}

static void reap(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static void test_output_over_the_cap_is_read_and_dropped(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int pidfd;
    /* several times a pipe's capacity: the child can only finish if the pump keeps reading */
    const size_t total = 1000000, cap = 100000;
    pid_t pid = child_writing(p, total, false, &pidfd);
    struct pump_buffer buf = {.cap = cap};
    struct pump_stream s;
    struct ev_err err;
    assert_int_equal(pump_reader(&s, p[0], pump_buffer_consume, &buf, &err), 0);
    int ev[1] = {pidfd};
    assert_int_equal(pump_run(&s, 1, ev, 1, 0, &err), 0); /* the child's exit */
    reap(pid);
    /* after the exit, the rest of the pipe up to its end */
    assert_int_equal(pump_run(&s, 1, NULL, 0, 0, &err), PUMP_ENDED);
    assert_int_equal(s.fd, -1);
    assert_false(s.failed);
    assert_true(buf.truncated);
    assert_int_equal(buf.len, cap);
    assert_int_equal(buf.data[cap], '\0');
    for (size_t i = 0; i < cap; i++)
        if (buf.data[i] != pattern(i))
            fail_msg("byte %zu differs", i);
    free(buf.data);
    close(pidfd);
}

static void test_deadline_passes_while_the_child_lives(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int pidfd;
    pid_t pid = child_writing(p, 10, true, &pidfd); /* never exits, keeps its pipe open */
    struct pump_buffer buf = {.cap = 1000};
    struct pump_stream s;
    struct ev_err err;
    assert_int_equal(pump_reader(&s, p[0], pump_buffer_consume, &buf, &err), 0);
    int ev[1] = {pidfd};
    uint64_t t0 = monotonic_ns();
    assert_int_equal(pump_run(&s, 1, ev, 1, t0 + 50000000, &err), PUMP_TIMEOUT);
    assert_true(monotonic_ns() >= t0 + 50000000);
    /* what the child wrote before it paused was read while waiting */
    assert_int_equal(buf.len, 10);
    assert_false(buf.truncated);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(pump_run(&s, 1, ev, 1, 0, &err), 0);
    reap(pid);
    pump_close(&s);
    free(buf.data);
    close(pidfd);
}

static void test_cancel_descriptor_ends_the_wait(void **state)
{
    (void)state;
    int p[2], cancel[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(cancel, O_CLOEXEC), 0);
    int pidfd;
    pid_t pid = child_writing(p, 0, true, &pidfd);
    struct pump_buffer buf = {.cap = 1000};
    struct pump_stream s;
    struct ev_err err;
    assert_int_equal(pump_reader(&s, p[0], pump_buffer_consume, &buf, &err), 0);
    assert_int_equal(write(cancel[1], "x", 1), 1);
    int ev[2] = {pidfd, cancel[0]};
    assert_int_equal(pump_run(&s, 1, ev, 2, 0, &err), 1);
    /* a descriptor below 0 is not watched: only the child's exit is left */
    assert_int_equal(kill(pid, SIGKILL), 0);
    int ev2[2] = {pidfd, -1};
    assert_int_equal(pump_run(&s, 1, ev2, 2, 0, &err), 0);
    reap(pid);
    pump_close(&s);
    free(buf.data);
    close(pidfd);
    close(cancel[0]);
    close(cancel[1]);
}

struct source {
    size_t off, total;
};

static ssize_t produce(void *ctx, char *buf, size_t size)
{
    struct source *src = ctx;
    size_t n = src->total - src->off < size ? src->total - src->off : size;
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern(src->off + i);
    src->off += n;
    return (ssize_t)n;
}

/* A producer feeding a pipe that a reader of the same pump drains: the shape of two runs'
 * pipes joined. The writer closes its end when the input ends, which ends the reader. */
static void test_producer_and_consumer_joined(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    const size_t total = 300000; /* several pipe capacities: both sides must take turns */
    struct source src = {0, total};
    struct pump_buffer buf = {.cap = total + 1};
    struct pump_stream s[2];
    struct ev_err err;
    assert_int_equal(pump_writer(&s[0], p[1], produce, &src, &err), 0);
    assert_int_equal(pump_reader(&s[1], p[0], pump_buffer_consume, &buf, &err), 0);
    assert_int_equal(pump_run(s, 2, NULL, 0, 0, &err), PUMP_ENDED);
    assert_false(s[0].failed);
    assert_false(s[1].failed);
    assert_false(buf.truncated);
    assert_int_equal(buf.len, total);
    for (size_t i = 0; i < total; i++)
        if (buf.data[i] != pattern(i))
            fail_msg("byte %zu differs", i);
    free(buf.data);
}

static int refuse(void *ctx, const char *buf, size_t n)
{
    (void)buf;
    *(size_t *)ctx += n;
    return -1;
}

/* A consumer that fails marks its stream, and the pipe is still read to its end, so that the
 * writer is never left blocked. */
static void test_failing_consumer_still_drains(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int pidfd;
    pid_t pid = child_writing(p, 200000, false, &pidfd);
    size_t seen = 0;
    struct pump_stream s;
    struct ev_err err;
    assert_int_equal(pump_reader(&s, p[0], refuse, &seen, &err), 0);
    assert_int_equal(pump_run(&s, 1, NULL, 0, 0, &err), PUMP_ENDED);
    reap(pid);
    assert_true(s.failed);
    assert_int_equal(seen, 200000);
    close(pidfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_over_the_cap_is_read_and_dropped),
        cmocka_unit_test(test_deadline_passes_while_the_child_lives),
        cmocka_unit_test(test_cancel_descriptor_ends_the_wait),
        cmocka_unit_test(test_producer_and_consumer_joined),
        cmocka_unit_test(test_failing_consumer_still_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
