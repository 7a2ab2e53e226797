/* The sandbox through its C interface, as the server uses it: a box kept across runs (files
 * carry over, the uid stays), cancellation, several runs at once from threads (a child cloned
 * from a multi-threaded process must neither keep other runs' descriptors nor call glibc
 * functions that wait for the parent's threads), no descriptor growth over many runs, and
 * network namespaces made ahead by a thread: each run still gets one of its own, never used
 * before. Needs root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/roots.h"
#include "sandbox/sandbox.h"

static struct sbx_host host;
static char *const env[] = {"PATH=/usr/bin:/bin", "HOME=/tmp", NULL};

/* Open descriptors, but the network namespaces the pool holds and the socket its thread opens
 * for a moment to bring loopback up: those depend on when the thread last ran. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char target[64] = "";
        if (readlinkat(dirfd(d), de->d_name, target, sizeof(target) - 1) > 0 &&
            (strncmp(target, "net:[", 5) == 0 || strncmp(target, "socket:[", 8) == 0))
            continue;
        n++;
    }
    closedir(d);
    return n;
}

static int run_sh(struct sbx_box *box, const char *script, struct sbx_result *res)
{
    char *const argv[] = {"sh", "-c", (char *)script, NULL};
    struct sbx_run_config cfg = {.argv = argv, .envp = env};
    sbx_limits_default(&cfg.limits);
    cfg.limits.wall_time_us = 10 * 1000000;
    /* small, so that descriptors copied from runs of other threads would show */
    cfg.limits.max_open_files = 16; /* dash keeps saved descriptors at 10 and up */
    struct ev_err err;
    int r = sbx_run(&host, box, &cfg, res, &err);
    if (r < 0)
        fprintf(stderr, "sbx_run: %s\n", err.msg);
    return r;
}

static int run_sh_mounted(struct sbx_box *box, const char *script, const struct sbx_mount *m,
                          struct sbx_result *res)
{
    char *const argv[] = {"sh", "-c", (char *)script, NULL};
    struct sbx_run_config cfg = {.argv = argv, .envp = env, .mounts = m, .n_mounts = 1};
    sbx_limits_default(&cfg.limits);
    cfg.limits.wall_time_us = 20 * 1000000;
    struct ev_err err;
    int r = sbx_run(&host, box, &cfg, res, &err);
    if (r < 0)
        fprintf(stderr, "sbx_run: %s\n", err.msg);
    return r;
}

struct holder {
    struct sbx_box *box;
    const struct sbx_mount *mount;
    struct sbx_result res;
    int rc;
};

/* Box A: takes the locks, says so through the FIFO `ready` of its box directory, and holds
 * them until a line arrives on the FIFO `go` (opened read-write first, so that the test's
 * open of it never waits). */
static void *hold_locks(void *arg)
{
    struct holder *h = arg;
    h->rc = run_sh_mounted(h->box,
                           "exec 4<>go; flock -x /usr/bin/env flock -x /etc/ld.so.cache "
                           "flock -x /runtime/lockme sh -c 'echo held > ready; read x <&4'",
                           h->mount, &h->res);
    return NULL;
}

static void make_fifo(const struct sbx_box *box, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", box->dir, name);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(chown(path, box->uid, box->gid), 0);
}

/* flock() works on files opened read-only, so a lock on a file of the shared trees (/usr,
 * /etc, a runtime's directory) would carry a signal between two boxes running at once. Box A
 * holds locks on such files while box B asks for the same ones: B must get each at once. A
 * runs in its prepared root, B builds its tree (its mount target is not a prepared point), so
 * both ways of making a tree are covered. */
static void test_locks_on_shared_files_do_not_reach_another_box(void **state)
{
    (void)state;
    char shared[] = "/tmp/envicutor-locks-XXXXXX", file[64], ready[400], go[400];
    assert_non_null(mkdtemp(shared));
    assert_int_equal(chmod(shared, 0755), 0);
    snprintf(file, sizeof(file), "%s/lockme", shared);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);
    struct sbx_mount at_runtime = {.source = shared, .target = "/runtime"};
    struct sbx_mount at_other = {.source = shared, .target = "/other"};

    struct sbx_box a, b;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &a, &err), 0);
    assert_int_equal(sbx_box_open(&host, NULL, &b, &err), 0);
    make_fifo(&a, "ready", ready, sizeof(ready));
    make_fifo(&a, "go", go, sizeof(go));
    struct holder h = {.box = &a, .mount = &at_runtime, .rc = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_locks, &h), 0);

    /* A holds its locks once it has written to `ready` (the poll's bound is only there so
     * that a failure of A fails the test instead of hanging it) */
    int ready_fd = open(ready, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(ready_fd >= 0);
    struct pollfd pfd = {.fd = ready_fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 30000), 1);
    char line[16] = "";
    assert_int_equal(read(ready_fd, line, sizeof(line) - 1), 5);
    assert_string_equal(line, "held\n");
    close(ready_fd);

    struct sbx_result res;
    assert_int_equal(run_sh_mounted(&b,
                                    "for f in /usr/bin/env /etc/ld.so.cache /other/lockme; do "
                                    "  flock -xn $f true || echo \"locked $f\"; done; echo done",
                                    &at_other, &res),
                     0);
    int go_fd = open(go, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(go_fd >= 0);
    assert_int_equal(write(go_fd, "\n", 1), 1);
    close(go_fd);
    assert_int_equal(pthread_join(t, NULL), 0);

    assert_int_equal(res.status, SBX_OK);
    assert_string_equal(res.out.data, "done\n");
    assert_int_equal(h.rc, 0);
    assert_int_equal(h.res.status, SBX_OK);
    sbx_result_free(&res);
    sbx_result_free(&h.res);
    sbx_box_close(&host, &a);
    sbx_box_close(&host, &b);
    assert_int_equal(unlink(file), 0);
    assert_int_equal(rmdir(shared), 0);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* A box's prepared root binds /etc entries once; ldconfig and tzdata replace theirs by rename,
 * and the box's next run must see the new file. The /etc of this host is a directory the test
 * controls (the host's own is not to be touched); the runs take the path the helper's do. */
static void test_prepared_root_follows_etc_entries_replaced_by_rename(void **state)
{
    (void)state;
    char etc[] = "/tmp/envicutor-etc-XXXXXX", path[128], tmp[128];
    assert_non_null(mkdtemp(etc));
    assert_int_equal(chmod(etc, 0755), 0);
    write_file(etc, "timezone", "Before/Update\n");
    static const char *const points[] = {"/runtime", NULL};
    struct sbx_host_config cfg = {
        .run_dir = getenv("ENVICUTOR_RUN_DIR"), .prepared_root_points = points, .etc_dir = etc};
    struct sbx_host h;
    struct ev_err err;
    assert_int_equal(sbx_host_init(&h, &cfg, &err), 0);
    assert_non_null(h.roots); /* the runs below take the prepared root's path */
    struct sbx_box box;
    assert_int_equal(sbx_box_open(&h, NULL, &box, &err), 0);
    char *const argv[] = {"cat", "/etc/timezone", NULL};
    struct sbx_run_config run = {.argv = argv, .envp = env};
    sbx_limits_default(&run.limits);
    struct sbx_result res;
    const char *expect[] = {"Before/Update\n", "Before/Update\n", "After/Update\n"};
    for (int i = 0; i < 3; i++) {
        if (i == 2) {
            write_file(etc, "timezone.new", "After/Update\n");
            snprintf(tmp, sizeof(tmp), "%s/timezone.new", etc);
            snprintf(path, sizeof(path), "%s/timezone", etc);
            assert_int_equal(rename(tmp, path), 0);
        }
        assert_int_equal(sbx_run(&h, &box, &run, &res, &err), 0);
        assert_int_equal(res.status, SBX_OK);
        assert_string_equal(res.out.data, expect[i]);
        sbx_result_free(&res);
    }
    sbx_box_close(&h, &box);
    sbx_host_free(&h);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(etc), 0);
}

static void test_box_carries_files_across_runs(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    struct sbx_result res;
    assert_int_equal(run_sh(&box, "echo compiled > prog; id -u", &res), 0);
    assert_int_equal(res.status, SBX_OK);
    char uid[32];
    snprintf(uid, sizeof(uid), "%u\n", (unsigned)box.uid);
    assert_string_equal(res.out.data, uid);
    sbx_result_free(&res);
    assert_int_equal(run_sh(&box, "cat prog; id -u; ls /tmp | wc -l", &res), 0);
    char expect[64];
    snprintf(expect, sizeof(expect), "compiled\n%u\n0\n", (unsigned)box.uid);
    assert_string_equal(res.out.data, expect);
    sbx_result_free(&res);
    sbx_box_close(&host, &box);
}

/* A fresh-box run, with files; `built`: with an extra mount at a point the prepared roots do
 * not have, so that the run builds its whole tree (mounts_build_root) instead of entering a
 * prepared one (mounts_enter_template). */
static int run_fresh(struct sbx_box *box, const char *script, bool built,
                     const struct sbx_file *files, size_t n_files, struct sbx_result *res)
{
    char *const argv[] = {"sh", "-c", (char *)script, NULL};
    static const struct sbx_mount extra = {.source = "/usr/share", .target = "/extra"};
    struct sbx_run_config cfg = {.argv = argv,
                                 .envp = env,
                                 .fresh_box = true,
                                 .files = files,
                                 .n_files = n_files,
                                 .mounts = built ? &extra : NULL,
                                 .n_mounts = built ? 1 : 0};
    sbx_limits_default(&cfg.limits);
    cfg.limits.wall_time_us = 20 * 1000000;
    struct ev_err err;
    int r = sbx_run(&host, box, &cfg, res, &err);
    if (r < 0)
        fprintf(stderr, "sbx_run: %s\n", err.msg);
    return r;
}

static int file_with(const char *text)
{
    char path[] = "/tmp/envicutor-fresh-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    return fd; /* its offset at the end: the copy must not depend on it */
}

/* A fresh box shows what a normal run left (a program it can run included) and takes any
 * write, change or deletion, in /box and /tmp; the next fresh run, and the next normal one,
 * see the box as it was. Its files appear with their exact bytes, read-only, and nothing the
 * run does reaches their source. Both ways of building a run's tree. */
static void test_a_fresh_box_is_thrown_away_with_its_run(void **state)
{
    (void)state;
    for (int built = 0; built < 2; built++) {
        struct sbx_box box;
        struct ev_err err;
        assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
        struct sbx_result res;
        assert_int_equal(run_sh(&box,
                                "echo original > f; mkdir d; echo kept > d/k; cp /bin/echo ./say; "
                                "echo 'earlier input' > input",
                                &res),
                         0);
        assert_int_equal(res.status, SBX_OK);
        sbx_result_free(&res);
        /* bytes that text would not carry: a NUL and no newline at the end */
        static const char bin[] = "line 1\n\0tail";
        int fds[2] = {file_with("the input\n"), file_with("")};
        assert_int_equal(pwrite(fds[1], bin, sizeof(bin) - 1, 0), (ssize_t)sizeof(bin) - 1);
        const struct sbx_file files[] = {{"input", fds[0]}, {"expected", fds[1]}};
        const char *changes =
            "./say ran; cat f d/k input; stat -c '%U %a' /box; stat -c '%U %a' input expected; "
            "od -An -c expected | tr -s ' '; "
            "echo changed > f; rm d/k; rmdir d; echo new > n; echo t > /tmp/t; rm say; "
            "(echo more >> input) 2>/dev/null || echo input is read-only; "
            "rm -f input expected; echo mine > input; cat input";
        assert_int_equal(run_fresh(&box, changes, built, files, 2, &res), 0);
        if (res.status != SBX_OK)
            fprintf(stderr, "fresh run: %s\n%s\n", res.message, res.err.data);
        assert_int_equal(res.status, SBX_OK);
        assert_string_equal(res.out.data, "ran\noriginal\nkept\nthe input\n"
                                          "box 755\nroot 444\nroot 444\n"
                                          " l i n e 1 \\n \\0 t a i l\n"
                                          "input is read-only\nmine\n");
        sbx_result_free(&res);
        /* the sources are as they were */
        char got[32] = "";
        assert_int_equal(pread(fds[0], got, sizeof(got), 0), 10);
        assert_memory_equal(got, "the input\n", 10);
        assert_int_equal(pread(fds[1], got, sizeof(got), 0), (ssize_t)sizeof(bin) - 1);
        assert_memory_equal(got, bin, sizeof(bin) - 1);
        /* the next fresh run, without files, and a normal run see the original box */
        const char *look = "ls -A /box; cat f d/k input; ls -A /tmp | wc -l";
        const char *original = "d\nf\ninput\nsay\noriginal\nkept\nearlier input\n0\n";
        assert_int_equal(run_fresh(&box, look, built, NULL, 0, &res), 0);
        assert_string_equal(res.out.data, original);
        sbx_result_free(&res);
        assert_int_equal(run_sh(&box, look, &res), 0);
        assert_string_equal(res.out.data, original);
        sbx_result_free(&res);
        close(fds[0]);
        close(fds[1]);
        sbx_box_close(&host, &box);
    }
}

/* What a fresh box may write is bounded like the box: its layer is a tmpfs of the box's
 * size. */
static void test_a_fresh_box_is_as_large_as_the_box(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    struct sbx_box_options opt = {.disk_kb = 1024, .max_inodes = 64};
    assert_int_equal(sbx_box_open(&host, &opt, &box, &err), 0);
    struct sbx_result res;
    assert_int_equal(run_fresh(&box,
                               "head -c 2000000 /dev/zero > big 2>/dev/null; "
                               "echo $(( $(stat -c %s big) <= 1048576 )); "
                               "i=0; while [ $i -lt 100 ] && touch f$i 2>/dev/null; do "
                               "i=$((i+1)); done; echo $(( i < 100 ))",
                               false, NULL, 0, &res),
                     0);
    assert_int_equal(res.status, SBX_OK);
    assert_string_equal(res.out.data, "1\n1\n");
    sbx_result_free(&res);
    sbx_box_close(&host, &box);
}

struct collected {
    char data[3][8192]; /* by stream: 1 stdout, 2 stderr */
    size_t len[3];
    int calls;
    bool refuse;
};

static int collect(void *ctx, int stream, const char *buf, size_t n)
{
    struct collected *c = ctx;
    c->calls++;
    if (c->refuse || stream < 1 || stream > 2 || c->len[stream] + n > sizeof(c->data[stream]))
        return -1;
    memcpy(c->data[stream] + c->len[stream], buf, n);
    c->len[stream] += n;
    return 0;
}

/* With a consumer, every byte of each stream goes to it as it is read (the cap is the
 * consumer's business) and the result's buffers stay empty; a consumer that cannot take a
 * chunk fails the run once it is over. */
static void test_output_goes_to_a_consumer(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    char *const argv[] = {"sh", "-c", "printf '%3000s' x; echo oops >&2", NULL};
    struct collected c = {0};
    struct sbx_run_config cfg = {.argv = argv, .envp = env, .on_output = collect, .output_ctx = &c};
    sbx_limits_default(&cfg.limits);
    cfg.limits.wall_time_us = 10 * 1000000;
    cfg.limits.max_output_bytes = 100;
    struct sbx_result res;
    assert_int_equal(sbx_run(&host, &box, &cfg, &res, &err), 0);
    assert_int_equal(res.status, SBX_OK);
    assert_int_equal(res.out.len, 0);
    assert_int_equal(res.err.len, 0);
    assert_int_equal(c.len[1], 3000);
    assert_int_equal(c.data[1][2999], 'x');
    assert_int_equal(c.data[1][0], ' ');
    assert_int_equal(c.len[2], 5);
    assert_memory_equal(c.data[2], "oops\n", 5);
    sbx_result_free(&res);

    struct collected refusing = {.refuse = true};
    cfg.output_ctx = &refusing;
    assert_int_equal(sbx_run(&host, &box, &cfg, &res, &err), -1);
    assert_int_equal(res.status, SBX_XX);
    assert_true(refusing.calls >= 2);
    assert_non_null(strstr(res.message, "consumer of the program's output"));
    sbx_result_free(&res);
    sbx_box_close(&host, &box);
}

static void test_cancel_stops_a_run_at_once(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    int efd = eventfd(0, EFD_CLOEXEC);
    char *const argv[] = {"sh", "-c", "trap '' TERM INT ABRT; sleep 30", NULL};
    struct sbx_run_config cfg = {.argv = argv, .envp = env, .cancel_fd = efd};
    sbx_limits_default(&cfg.limits);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100000);
        uint64_t one = 1;
        _exit(write(efd, &one, sizeof(one)) == sizeof(one) ? 0 : 1);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct sbx_result res;
    assert_int_equal(sbx_run(&host, &box, &cfg, &res, &err), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_non_null(strstr(err.msg, "cancelled"));
    assert_true(t1.tv_sec - t0.tv_sec < 3);
    sbx_result_free(&res);
    close(efd);
    sbx_box_close(&host, &box);
}

static void *worker(void *arg)
{
    long *ok = arg;
    struct sbx_box box;
    struct ev_err err;
    if (sbx_box_open(&host, NULL, &box, &err) < 0)
        return NULL;
    struct sbx_result res;
    for (int i = 0; i < 5; i++) {
        if (run_sh(&box, "echo $$; sleep 0.05", &res) == 0 && res.status == SBX_OK &&
            strcmp(res.out.data, "2\n") == 0)
            (*ok)++;
        sbx_result_free(&res);
    }
    sbx_box_close(&host, &box);
    return NULL;
}

static void test_runs_from_several_threads_at_once(void **state)
{
    (void)state;
    pthread_t t[4];
    long ok[4] = {0};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, &ok[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ok[i], 5);
}

static void test_no_descriptor_leak_over_many_runs(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    struct sbx_result res;
    assert_int_equal(run_sh(&box, "true", &res), 0);
    sbx_result_free(&res);
    int before = count_fds();
    for (int i = 0; i < 50; i++) {
        assert_int_equal(run_sh(&box, i % 2 ? "exit 3" : "kill -9 $$", &res), 0);
        assert_int_equal(res.status, i % 2 ? SBX_RE : SBX_SG);
        sbx_result_free(&res);
    }
    assert_int_equal(count_fds(), before);
    sbx_box_close(&host, &box);
}

/* Two runs one after the other in one box: the second sees none of the first's loopback
 * traffic and is in another namespace. */
static void test_each_run_has_a_fresh_network_namespace(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    /* lo's received-packet count, then the namespace; the first run also sends a datagram */
    const char *probe =
        "python3 -c \"import socket,os\n"
        "if os.environ.get('SEND'):\n"
        " s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',0))\n"
        " s.sendto(b'x',s.getsockname()); s.recv(1)\n"
        "l=[x for x in open('/proc/net/dev') if x.strip().startswith('lo:')][0]\n"
        "print(l.split()[2], os.readlink('/proc/self/ns/net'))\"";
    char script[600];
    snprintf(script, sizeof(script), "SEND=1 %s", probe);
    struct sbx_result first, second;
    assert_int_equal(run_sh(&box, script, &first), 0);
    assert_int_equal(first.status, SBX_OK);
    assert_int_equal(run_sh(&box, probe, &second), 0);
    assert_int_equal(second.status, SBX_OK);
    char ns1[64], ns2[64];
    unsigned long rx1, rx2;
    assert_int_equal(sscanf(first.out.data, "%lu %63s", &rx1, ns1), 2);
    assert_int_equal(sscanf(second.out.data, "%lu %63s", &rx2, ns2), 2);
    assert_true(rx1 >= 1); /* the datagram went through the first run's loopback */
    assert_int_equal(rx2, 0);
    assert_string_not_equal(ns1, ns2);
    struct stat own;
    assert_int_equal(stat("/proc/self/ns/net", &own), 0);
    char host_ns[64];
    snprintf(host_ns, sizeof(host_ns), "net:[%lu]", (unsigned long)own.st_ino);
    assert_string_not_equal(ns1, host_ns);
    sbx_result_free(&first);
    sbx_result_free(&second);
    sbx_box_close(&host, &box);
}

/* Runs in one box enter copies of the same prepared root: nothing but /box, /tmp and /proc is
 * writable, every mount is nosuid and all but /dev nodev, and what one run tries to leave in
 * the shared tree is not there for the next (the two see the very same tree). */
static void test_prepared_root_is_read_only_and_the_same_for_each_run(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    /* mount point and options of every mount, one per line, then writes that must fail */
    const char *probe =
        "awk '{print $5, $6}' /proc/self/mountinfo | while read -r mp opts; do "
        "  case $mp in /box|/tmp|/proc) ;; *) case ,$opts, in *,ro,*) ;; *) echo \"rw $mp\";; "
        "esac;; esac; "
        "  case ,$opts, in *,nosuid,*) ;; *) echo \"suid $mp\";; esac; "
        "  [ \"$mp\" = /dev ] || case ,$opts, in *,nodev,*) ;; *) echo \"dev $mp\";; esac; "
        "done; "
        "for f in /x /etc/x /etc/passwd /dev/x /usr/x /runtime/x; do "
        "  (echo left >> $f) 2>/dev/null && echo \"wrote $f\"; done; "
        /* (what each run mounts afresh, /proc, /tmp and /box, has its own times) */
        "(ls -la --time-style=+%s / | grep -Ev ' (proc|tmp|box)$'; "
        " ls -la --time-style=+%s /etc /dev) | md5sum";
    struct sbx_result first, second;
    assert_int_equal(run_sh(&box, probe, &first), 0);
    assert_int_equal(first.status, SBX_OK);
    assert_int_equal(run_sh(&box, probe, &second), 0);
    assert_int_equal(second.status, SBX_OK);
    /* nothing reported but the listing's digest, and the same listing both times */
    if (strlen(first.out.data) != 36 || strcmp(first.out.data, second.out.data) != 0)
        fprintf(stderr, "first run:\n%s%s\nsecond run:\n%s%s\n", first.out.data, first.err.data,
                second.out.data, second.err.data);
    assert_int_equal(strlen(first.out.data), 36);
    assert_string_equal(first.out.data, second.out.data);
    sbx_result_free(&first);
    sbx_result_free(&second);
    sbx_box_close(&host, &box);
}

/* The hierarchies a run gets a cgroup in (our subtree in each), as the host detected them. */
static int run_cgroup_bases(const struct sbx_host *h, const char *bases[4])
{
    int n = 0;
    if (h->cg.v2)
        bases[n++] = h->cg.v2_base;
    if (h->cg.memory == CG_V1)
        bases[n++] = h->cg.v1_memory;
    if (h->cg.pids == CG_V1)
        bases[n++] = h->cg.v1_pids;
    if (h->cg.cpu == CG_V1)
        bases[n++] = h->cg.v1_cpuacct;
    return n;
}

/* The leftovers a test planted, removed whatever the test's outcome (rmdir: a cgroup
 * directory cannot be removed any other way). */
static char planted[8][700];
static int n_planted;
static pid_t planted_pid = -1;

static int remove_planted(void **state)
{
    (void)state;
    if (planted_pid > 0) {
        kill(planted_pid, SIGKILL);
        waitpid(planted_pid, NULL, 0);
        planted_pid = -1;
    }
    for (int i = n_planted - 1; i >= 0; i--)
        if (rmdir(planted[i]) < 0 && errno != ENOENT) {
            fprintf(stderr, "could not remove the planted %s: %s\n", planted[i], strerror(errno));
            return -1;
        }
    n_planted = 0;
    return 0;
}

static void plant_dir(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void plant_dir(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(planted[n_planted], sizeof(planted[0]), fmt, ap);
    va_end(ap);
    assert_int_equal(mkdir(planted[n_planted], 0755), 0);
    n_planted++;
}

/* A run whose teardown failed leaves its cgroups behind, with what was still alive in them;
 * the next run of the same box kills that and starts from fresh cgroups. */
static void test_a_run_after_a_failed_teardown_of_the_same_box(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    const char *bases[4];
    int nb = run_cgroup_bases(&host, bases);
    assert_true(nb > 0);
    for (int i = 0; i < nb; i++)
        plant_dir("%s/box-%d", bases[i], box.id);
    /* a process still in the first of them, as a task slow to die would be */
    int ready[2];
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    planted_pid = fork();
    assert_true(planted_pid >= 0);
    if (planted_pid == 0) {
        char procs[720];
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", planted[0]);
        FILE *f = fopen(procs, "w");
        if (!f || fputs("0", f) < 0 || fclose(f) != 0)
            _exit(1);
        if (write(ready[1], "j", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);

    struct sbx_result res;
    assert_int_equal(run_sh(&box, "echo fresh", &res), 0);
    assert_int_equal(res.status, SBX_OK);
    assert_string_equal(res.out.data, "fresh\n");
    sbx_result_free(&res);
    int status;
    assert_int_equal(waitpid(planted_pid, &status, 0), planted_pid);
    planted_pid = -1;
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* and the run removed its own cgroups as usual */
    for (int i = 0; i < n_planted; i++)
        assert_int_equal(access(planted[i], F_OK), -1);
    sbx_box_close(&host, &box);
}

/* A host of its own with few boxes, so that which box a search meets is known. Its boxes are
 * the first ones of the host-wide lock directory, shared with every other owner. */
static struct sbx_host small;
static bool small_up;

static void small_host(unsigned n_boxes)
{
    struct sbx_host_config cfg = {.run_dir = getenv("ENVICUTOR_RUN_DIR"), .n_boxes = n_boxes};
    struct ev_err err;
    int r = sbx_host_init(&small, &cfg, &err);
    if (r < 0)
        fprintf(stderr, "sbx_host_init: %s\n", err.msg);
    assert_int_equal(r, 0);
    small_up = true;
}

static int free_small_host(void **state)
{
    int r = remove_planted(state);
    if (small_up)
        sbx_host_free(&small);
    small_up = false;
    return r;
}

/* A long-lived owner (the helper) spreads successive boxes over the range instead of taking
 * the same one each time. */
static void test_successive_opens_rotate_over_boxes(void **state)
{
    (void)state;
    small_host(3);
    bool seen[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        struct sbx_box box;
        struct ev_err err;
        assert_int_equal(sbx_box_open(&small, NULL, &box, &err), 0);
        assert_false(seen[box.id]);
        seen[box.id] = true;
        sbx_box_close(&small, &box);
    }
}

/* With prepared roots, searches rotate over the first ROOTS_MAX boxes only, the ones that keep
 * a prepared root: a rotation over the whole range gave nearly every submission a box whose
 * runs built their tree each time. */
static void test_opens_stay_among_boxes_that_keep_a_prepared_root(void **state)
{
    (void)state;
    static const char *const points[] = {"/runtime", NULL};
    struct sbx_host_config cfg = {.run_dir = getenv("ENVICUTOR_RUN_DIR"),
                                  .n_boxes = ROOTS_MAX + 8,
                                  .prepared_root_points = points};
    struct ev_err err;
    if (sbx_host_init(&small, &cfg, &err) < 0)
        fail_msg("sbx_host_init: %s", err.msg);
    small_up = true;
    bool seen[ROOTS_MAX] = {false};
    int distinct = 0;
    for (int i = 0; i < 2 * ROOTS_MAX + 1; i++) {
        struct sbx_box box;
        if (sbx_box_open(&small, NULL, &box, &err) < 0)
            fail_msg("open %d: %s", i, err.msg);
        int id = box.id;
        sbx_box_close(&small, &box);
        if (id >= ROOTS_MAX)
            fail_msg("open %d took box %d, beyond the %d that keep a prepared root", i, id,
                     ROOTS_MAX);
        distinct += !seen[id];
        seen[id] = true;
    }
    assert_int_equal(distinct, ROOTS_MAX); /* still rotating, over all of them */
}

/* A free box whose leftovers cannot be cleaned (here its cgroup, which holds a child cgroup,
 * so rmdir fails with EBUSY) is skipped and counted, and not tried again while another box is
 * free; when it is the only free one, it is tried again, and taken once it can be cleaned. */
static void test_a_box_that_cannot_be_cleaned_is_skipped(void **state)
{
    (void)state;
    /* a search starts at the owner's pid, so the first one meets the bad box first */
    int bad = (int)((unsigned)getpid() % 2), good = !bad;
    const char *bases[4];
    assert_true(run_cgroup_bases(&host, bases) > 0);
    plant_dir("%s/box-%d", bases[0], bad);
    plant_dir("%s/box-%d/stuck", bases[0], bad);
    small_host(2);

    struct sbx_box a, b;
    struct ev_err err;
    if (sbx_box_open(&small, NULL, &a, &err) < 0)
        fail_msg("open with one good box free: %s", err.msg);
    assert_int_equal(a.id, good);
    assert_int_equal(sbx_boxes_skipped(&small), 1);
    /* the bad box is the only free one: tried again, refused with the reason */
    assert_int_equal(sbx_box_open(&small, NULL, &b, &err), -1);
    assert_non_null(strstr(err.msg, "cannot be cleaned"));
    assert_int_equal(sbx_boxes_skipped(&small), 2);
    sbx_box_close(&small, &a);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sbx_box_open(&small, NULL, &a, &err), 0);
        assert_int_equal(a.id, good);
        sbx_box_close(&small, &a);
    }
    assert_int_equal(sbx_boxes_skipped(&small), 2);

    assert_int_equal(remove_planted(NULL), 0);
    assert_int_equal(sbx_box_open(&small, NULL, &a, &err), 0);
    assert_int_equal(a.id, good);
    if (sbx_box_open(&small, NULL, &b, &err) < 0)
        fail_msg("open of the box cleaned since: %s", err.msg);
    assert_int_equal(b.id, bad);
    assert_int_equal(sbx_boxes_skipped(&small), 2);
    sbx_box_close(&small, &b);
    sbx_box_close(&small, &a);
}

/* The error object need not be cleared: a run that succeeds says so by its return value and
 * its result, whatever the object held; one that fails replaces what it held. */
static void test_runs_with_a_stale_error_object(void **state)
{
    (void)state;
    struct sbx_box box;
    struct ev_err err;
    memset(&err, 'x', sizeof(err));
    assert_int_equal(sbx_box_open(&host, NULL, &box, &err), 0);
    char *const argv[] = {"sh", "-c", "echo fine", NULL};
    struct sbx_run_config cfg = {.argv = argv, .envp = env};
    sbx_limits_default(&cfg.limits);
    struct sbx_result res;
    memset(&err, 'x', sizeof(err));
    assert_int_equal(sbx_run(&host, &box, &cfg, &res, &err), 0);
    assert_int_equal(res.status, SBX_OK);
    assert_string_equal(res.out.data, "fine\n");
    assert_string_equal(res.message, "");
    sbx_result_free(&res);
    char *const none[] = {NULL};
    cfg.argv = none;
    snprintf(err.msg, sizeof(err.msg), "a stale message from an earlier call");
    assert_int_equal(sbx_run(&host, &box, &cfg, &res, &err), -1);
    assert_string_equal(err.msg, "no command to run");
    assert_string_equal(res.message, "no command to run");
    sbx_result_free(&res);
    sbx_box_close(&host, &box);
}

/* The pool itself: every namespace it hands out is a different one, not the caller's, with
 * loopback up. */
static void test_pool_hands_out_distinct_namespaces(void **state)
{
    (void)state;
    struct netns_pool *pool;
    struct ev_err err;
    assert_int_equal(netns_pool_start(&pool, 2, NULL, NULL, &err), 0);
    struct stat own;
    assert_int_equal(stat("/proc/self/ns/net", &own), 0);
    ino_t seen[5];
    for (int i = 0; i < 5; i++) {
        int fd = netns_pool_take(pool);
        assert_true(fd >= 0);
        netns_pool_refill(pool);
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        assert_true(st.st_ino != own.st_ino);
        for (int j = 0; j < i; j++)
            assert_true(st.st_ino != seen[j]);
        seen[i] = st.st_ino;
        pid_t pid = fork();
        if (pid == 0) {
            /* in the namespace, lo must be up already (asked through a socket made there:
             * /sys would show the namespace it was mounted in, the host's) */
            if (setns(fd, CLONE_NEWNET) < 0)
                _exit(2);
            int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            struct ifreq ifr = {0};
            snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
            if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
                _exit(3);
            _exit(ifr.ifr_flags & IFF_UP ? 0 : 4);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        close(fd);
    }
    netns_pool_stop(pool);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_sandbox_api: needs root\n");
        return 1;
    }
    struct ev_err err;
    /* as the server's helper has it: network namespaces made ahead, prepared roots */
    static const char *const points[] = {"/runtime", NULL};
    struct sbx_host_config cfg = {
        .run_dir = getenv("ENVICUTOR_RUN_DIR"), .netns_ahead = 2, .prepared_root_points = points};
    if (sbx_host_init(&host, &cfg, &err) < 0) {
        fprintf(stderr, "sbx_host_init: %s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_box_carries_files_across_runs),
        cmocka_unit_test(test_a_fresh_box_is_thrown_away_with_its_run),
        cmocka_unit_test(test_a_fresh_box_is_as_large_as_the_box),
        cmocka_unit_test(test_cancel_stops_a_run_at_once),
        cmocka_unit_test(test_output_goes_to_a_consumer),
        cmocka_unit_test(test_runs_from_several_threads_at_once),
        cmocka_unit_test(test_no_descriptor_leak_over_many_runs),
        cmocka_unit_test(test_each_run_has_a_fresh_network_namespace),
        cmocka_unit_test(test_prepared_root_is_read_only_and_the_same_for_each_run),
        cmocka_unit_test(test_pool_hands_out_distinct_namespaces),
        cmocka_unit_test_teardown(test_a_run_after_a_failed_teardown_of_the_same_box,
                                  remove_planted),
        cmocka_unit_test(test_runs_with_a_stale_error_object),
        cmocka_unit_test_teardown(test_successive_opens_rotate_over_boxes, free_small_host),
        cmocka_unit_test_teardown(test_a_box_that_cannot_be_cleaned_is_skipped, free_small_host),
        cmocka_unit_test_teardown(test_opens_stay_among_boxes_that_keep_a_prepared_root,
                                  free_small_host),
        cmocka_unit_test(test_locks_on_shared_files_do_not_reach_another_box),
        cmocka_unit_test(test_prepared_root_follows_etc_entries_replaced_by_rename),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    sbx_host_free(&host);
    return r;
}
