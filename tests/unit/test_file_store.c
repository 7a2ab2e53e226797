/* Unit tests of the file store: ids, idempotent puts, the exact total under its bounds and
 * under concurrent puts, linking without a copy, the scan at start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/sha256.h"
#include "pipeline/file_store.h"

static char scratch[256];

static int make_scratch(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/envicutor-unit-XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static int remove_scratch(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", scratch);
    return system(cmd) == 0 ? 0 : -1;
}

static void hex_of(const void *data, size_t len, char out[FILE_ID_LEN + 1])
{
    unsigned char d[SHA256_LEN];
    sha256(data, len, d);
    sha256_hex(d, out);
}

/* The names in the store's directory, but "." and "..". */
static int entries(void)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/files", scratch);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_ids(void **state)
{
    (void)state;
    char id[FILE_ID_LEN + 1];
    hex_of("x", 1, id);
    assert_true(file_id_valid(id));
    assert_true(file_id_valid("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_false(file_id_valid("0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_false(file_id_valid("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"));
    assert_false(
        file_id_valid("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"));
    assert_false(file_id_valid("../../../../etc/passwd"));
    assert_false(file_id_valid(""));
}

static void test_put_get_delete_and_total(void **state)
{
    (void)state;
    struct file_store fs;
    struct ev_err err;
    assert_int_equal(file_store_init(&fs, scratch, 100, 150, &err), 0);
    struct file_info info;
    enum file_put_status st;
    const char a[] = "a\0b\xff", b[60] = "b";
    char want[FILE_ID_LEN + 1];
    hex_of(a, sizeof(a), want);

    assert_int_equal(file_store_put_mem(&fs, a, sizeof(a), &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_OK);
    assert_string_equal(info.id, want);
    assert_int_equal(info.size, sizeof(a));
    /* the same bytes again: the same id, counted once */
    assert_int_equal(file_store_put_mem(&fs, a, sizeof(a), &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_OK);
    assert_string_equal(info.id, want);
    uint64_t used, count;
    file_store_usage(&fs, &used, &count);
    assert_int_equal(used, sizeof(a));
    assert_int_equal(count, 1);

    char big[101] = {0};
    assert_int_equal(file_store_put_mem(&fs, big, sizeof(big), &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_TOO_LARGE);
    assert_int_equal(file_store_put_mem(&fs, big, 100, &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_OK);
    /* 5 + 100 stored; 60 more would go over 150 */
    assert_int_equal(file_store_put_mem(&fs, b, sizeof(b), &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_FULL);
    assert_int_equal(entries(), 2);

    int fd;
    uint64_t size;
    bool found;
    assert_int_equal(file_store_open(&fs, want, &fd, &size, &found, &err), 0);
    assert_true(found);
    assert_int_equal(size, sizeof(a));
    char back[16];
    assert_int_equal(read_full(fd, back, sizeof(back)), sizeof(a));
    assert_memory_equal(back, a, sizeof(a));
    assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0444);

    assert_int_equal(file_store_delete(&fs, want, &found, &err), 0);
    assert_true(found);
    /* an open descriptor outlives the delete */
    assert_int_equal(pread_full(fd, back, sizeof(back), 0), sizeof(a));
    close(fd);
    assert_int_equal(file_store_delete(&fs, want, &found, &err), 0);
    assert_false(found);
    assert_int_equal(file_store_open(&fs, want, &fd, &size, &found, &err), 0);
    assert_false(found);
    assert_int_equal(fd, -1);
    assert_int_equal(file_store_open(&fs, "../files", &fd, &size, &found, &err), 0);
    assert_false(found);
    file_store_usage(&fs, &used, &count);
    assert_int_equal(used, 100);
    assert_int_equal(count, 1);
    assert_int_equal(file_store_put_mem(&fs, b, sizeof(b), &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_FULL); /* 160 > 150 still */
    file_store_close(&fs);
}

/* An unnamed file of the store becomes the stored file itself (same inode); a memfd is
 * copied; neither leaves a temporary name. */
static void test_link_without_copy_and_copy_from_elsewhere(void **state)
{
    (void)state;
    struct file_store fs;
    struct ev_err err;
    assert_int_equal(file_store_init(&fs, scratch, 1 << 20, 1 << 22, &err), 0);
    int fd = file_store_tmpfile(&fs, &err);
    assert_true(fd >= 0);
    char data[300000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7);
    assert_int_equal(write_full(fd, data, sizeof(data)), sizeof(data));
    struct file_info info;
    enum file_put_status st;
    assert_int_equal(file_store_put_fd(&fs, fd, &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_OK);
    char want[FILE_ID_LEN + 1];
    hex_of(data, sizeof(data), want);
    assert_string_equal(info.id, want);
    struct stat up, kept;
    assert_int_equal(fstat(fd, &up), 0);
    assert_int_equal(fstatat(fs.dir_fd, want, &kept, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(up.st_ino, kept.st_ino);
    close(fd);

    int mfd = memfd_create("unit", MFD_CLOEXEC);
    assert_true(mfd >= 0);
    assert_int_equal(write_full(mfd, data, 1000), 1000);
    assert_int_equal(file_store_put_fd(&fs, mfd, &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_OK);
    hex_of(data, 1000, want);
    assert_string_equal(info.id, want);
    int rfd;
    uint64_t size;
    bool found;
    assert_int_equal(file_store_open(&fs, want, &rfd, &size, &found, &err), 0);
    assert_true(found);
    char back[1000];
    assert_int_equal(read_full(rfd, back, sizeof(back)), 1000);
    assert_memory_equal(back, data, 1000);
    close(rfd);
    close(mfd);
    assert_int_equal(entries(), 2);
    file_store_close(&fs);
}

/* A start counts what is stored and removes what an interrupted copy left. */
static void test_scan_at_start(void **state)
{
    (void)state;
    struct file_store fs;
    struct ev_err err;
    struct file_info info;
    enum file_put_status st;
    assert_int_equal(file_store_init(&fs, scratch, 100, 100, &err), 0);
    assert_int_equal(file_store_put_mem(&fs, "0123456789", 10, &info, &st, &err), 0);
    assert_int_equal(file_store_put_mem(&fs, "abc", 3, &info, &st, &err), 0);
    file_store_close(&fs);
    char path[300];
    snprintf(path, sizeof(path), "%s/files/.tmp-99-1", scratch);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write_full(fd, "half", 4), 4);
    close(fd);
    assert_int_equal(entries(), 3);

    assert_int_equal(file_store_init(&fs, scratch, 100, 100, &err), 0);
    assert_int_equal(entries(), 2);
    uint64_t used, count;
    file_store_usage(&fs, &used, &count);
    assert_int_equal(used, 13);
    assert_int_equal(count, 2);
    char rest[88] = {0};
    assert_int_equal(file_store_put_mem(&fs, rest, 88, &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_FULL);
    assert_int_equal(file_store_put_mem(&fs, rest, 87, &info, &st, &err), 0);
    assert_int_equal(st, FILE_PUT_OK);
    file_store_close(&fs);
}

/* Threads storing the same bytes and different ones at once: each file counted once, the total
 * exact, no temporary name left. */
#define THREADS 8
#define ROUNDS 40

struct racer {
    struct file_store *fs;
    int n;
    int failures;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct ev_err err;
    for (int i = 0; i < ROUNDS; i++) {
        char shared[4096], own[100];
        memset(shared, i, sizeof(shared));
        snprintf(own, sizeof(own), "thread %d round %d", r->n, i);
        struct file_info info;
        enum file_put_status st;
        if (file_store_put_mem(r->fs, shared, sizeof(shared), &info, &st, &err) < 0 ||
            st != FILE_PUT_OK ||
            file_store_put_mem(r->fs, own, strlen(own), &info, &st, &err) < 0 || st != FILE_PUT_OK)
            r->failures++;
    }
    return NULL;
}

static void test_concurrent_puts_count_exactly(void **state)
{
    (void)state;
    struct file_store fs;
    struct ev_err err;
    assert_int_equal(file_store_init(&fs, scratch, 1 << 20, 1 << 30, &err), 0);
    pthread_t th[THREADS];
    struct racer r[THREADS];
    uint64_t want = 0;
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct racer){&fs, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
        for (int k = 0; k < ROUNDS; k++) {
            char own[100];
            want += (uint64_t)snprintf(own, sizeof(own), "thread %d round %d", i, k);
        }
    }
    want += ROUNDS * 4096;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(r[i].failures, 0);
    }
    uint64_t used, count;
    file_store_usage(&fs, &used, &count);
    assert_int_equal(used, want);
    assert_int_equal(count, ROUNDS + THREADS * ROUNDS);
    assert_int_equal(entries(), ROUNDS + THREADS * ROUNDS);
    file_store_close(&fs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test_setup_teardown(test_put_get_delete_and_total, make_scratch,
                                        remove_scratch),
        cmocka_unit_test_setup_teardown(test_link_without_copy_and_copy_from_elsewhere,
                                        make_scratch, remove_scratch),
        cmocka_unit_test_setup_teardown(test_scan_at_start, make_scratch, remove_scratch),
        cmocka_unit_test_setup_teardown(test_concurrent_puts_count_exactly, make_scratch,
                                        remove_scratch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
