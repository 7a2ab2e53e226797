/* Descriptors of the multi-threaded helper and server are close-on-exec: while one thread holds
 * a descriptor, another may fork and exec a box's init or a tool at any moment, and a
 * descriptor without FD_CLOEXEC would reach that program.
 *
 * The moment is made to happen by construction rather than by a race: fdopendir is wrapped
 * here (this executable's definition comes before the C library's), and at each call, while
 * the copied directory descriptor is open, the wrapper starts a program and asks it which of
 * those descriptors it inherited. Then the C library's fdopendir runs as usual. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/rmtree.h"
#include "pipeline/runtime_store.h"

static struct {
    int calls;  /* fdopendir calls seen */
    int leaked; /* of them, descriptors a started program inherited */
    char what[256];
} seen;

/* Starts /usr/bin/readlink on /proc/self/fd/FD: it prints the target only if the program
 * holds descriptor FD, i.e. if FD survived the exec. Returns 1 when it did. */
static int inherited_by_a_program(int fd)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        if (dup2(p[1], 1) < 0)
            _exit(126);
        char *const argv[] = {"readlink", path, NULL};
        char *const envp[] = {NULL};
        execve("/usr/bin/readlink", argv, envp);
        _exit(127);
    }
    close(p[1]);
    char out[256] = "";
    ssize_t n, len = 0;
    while ((n = read(p[0], out + len, sizeof(out) - 1 - (size_t)len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += n;
    }
    close(p[0]);
    int st = 0;
    while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) > 1)
        return -1; /* readlink itself failed to run: not an answer */
    if (len > 0)
        snprintf(seen.what, sizeof(seen.what), "%.*s", (int)len, out);
    return len > 0;
}

DIR *fdopendir(int fd)
{
    static DIR *(*real)(int);
    if (!real)
        real = (DIR * (*)(int)) dlsym(RTLD_NEXT, "fdopendir");
    seen.calls++;
    int r = inherited_by_a_program(fd);
    assert_true(r >= 0);
    seen.leaked += r;
    return real(fd);
}

static char scratch[64];

static int make_scratch(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/envicutor-fd-XXXXXX");
    memset(&seen, 0, sizeof(seen));
    return mkdtemp(scratch) ? 0 : -1;
}

static int remove_scratch(void **state)
{
    (void)state;
    int dfd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct ev_err err = {0};
    int r = dfd >= 0 ? rmtree_at(dfd, scratch + 5, &err) : -1;
    if (dfd >= 0)
        close(dfd);
    return r;
}

static void mkdir_in(const char *rel)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", scratch, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static void test_rmtree_holds_no_descriptor_a_started_program_inherits(void **state)
{
    (void)state;
    mkdir_in("tree");
    mkdir_in("tree/a");
    mkdir_in("tree/a/b");
    int dfd = open(scratch, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    struct ev_err err = {0};
    assert_int_equal(rmtree_at(dfd, "tree", &err), 0);
    close(dfd);
    /* one directory listing per level: tree, a, b */
    assert_int_equal(seen.calls, 3);
    if (seen.leaked)
        fail_msg("a program inherited %d descriptors, e.g. of %s", seen.leaked, seen.what);
}

static void test_store_sweep_holds_no_descriptor_a_started_program_inherits(void **state)
{
    (void)state;
    struct ev_err err = {0};
    struct store *s = store_open(scratch, &err);
    assert_non_null(s);
    /* an unfinished runtime directory the sweep removes */
    mkdir_in("runtimes/unfinished");
    seen.calls = seen.leaked = 0;
    assert_int_equal(store_sweep(s, &err), 1);
    store_close(s);
    /* the runtimes directory, then the removed one */
    assert_int_equal(seen.calls, 2);
    if (seen.leaked)
        fail_msg("a program inherited %d descriptors, e.g. of %s", seen.leaked, seen.what);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rmtree_holds_no_descriptor_a_started_program_inherits,
                                        make_scratch, remove_scratch),
        cmocka_unit_test_setup_teardown(
            test_store_sweep_holds_no_descriptor_a_started_program_inherits, make_scratch,
            remove_scratch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
