#include "pipeline/file_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"

/* Names an interrupted copy may leave (only the copy path names a file before it is whole). */
#define TMP_PREFIX ".tmp-"

#define CHUNK (256u << 10)

bool file_id_valid(const char *id)
{
    for (size_t i = 0; i < FILE_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false; /* a NUL before 64 digits stops here too */
    return id[FILE_ID_LEN] == '\0';
}

/* Removes what an interrupted copy left and counts the stored files. Entries that are neither
 * are left alone (and never served: open wants a regular file under a valid id). */
static int scan(struct file_store *fs, struct ev_err *err)
{
    int dfd = fcntl(fs->dir_fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return ev_fail(err, errno, "%s: dup", fs->dir);
    cleanup_closedir DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return ev_fail(err, errno, "%s: opendir", fs->dir);
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                return ev_fail(err, errno, "%s: readdir", fs->dir);
            return 0;
        }
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            if (unlinkat(fs->dir_fd, e->d_name, 0) < 0 && errno != ENOENT)
                return ev_fail(err, errno, "%s: remove the unfinished %s", fs->dir, e->d_name);
            continue;
        }
        if (!file_id_valid(e->d_name))
            continue;
        struct stat st;
        if (fstatat(fs->dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return ev_fail(err, errno, "%s/%s: stat", fs->dir, e->d_name);
        if (S_ISREG(st.st_mode)) {
            fs->used += (uint64_t)st.st_size;
            fs->count++;
        }
    }
}

int file_store_init(struct file_store *fs, const char *data_dir, uint64_t max_file,
                    uint64_t max_total, struct ev_err *err)
{
    memset(fs, 0, sizeof(*fs));
    fs->dir_fd = -1;
    fs->max_file = max_file;
    fs->max_total = max_total;
    atomic_init(&fs->tmp_seq, 0);
    if ((size_t)snprintf(fs->dir, sizeof(fs->dir), "%s/files", data_dir) >= sizeof(fs->dir))
        return ev_fail(err, 0, "file store: the path %s/files is too long", data_dir);
    /* 0700 like the data directory: the stored tests are the judges' secrets */
    if (make_dir(fs->dir, 0700, err) < 0)
        return ev_wrap(err, "file store: ");
    fs->dir_fd = open(fs->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fs->dir_fd < 0)
        return ev_fail(err, errno, "file store: open %s", fs->dir);
    int e = pthread_mutex_init(&fs->mu, NULL);
    if (e) {
        close(fs->dir_fd);
        fs->dir_fd = -1;
        return ev_fail(err, e, "file store: mutex");
    }
    if (scan(fs, err) < 0) {
        file_store_close(fs);
        return -1;
    }
    return 0;
}

void file_store_close(struct file_store *fs)
{
    if (fs->dir_fd >= 0) {
        close(fs->dir_fd);
        pthread_mutex_destroy(&fs->mu);
    }
    fs->dir_fd = -1;
}

int file_store_tmpfile(struct file_store *fs, struct ev_err *err)
{
    int fd = openat(fs->dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    /* A file system without O_TMPFILE: the bytes are copied in at the end instead. */
    int e = errno;
    fd = memfd_create("envicutor-file", MFD_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, e, "file store: an unnamed file in %s", fs->dir);
    return fd;
}

/* The SHA-256 of fd's first size bytes, which must all be there. */
static int hash_fd(int fd, uint64_t size, char id[FILE_ID_LEN + 1], struct ev_err *err)
{
    cleanup_free unsigned char *buf = malloc(CHUNK);
    if (!buf)
        return ev_fail(err, ENOMEM, "file store: hash");
    struct sha256 c;
    sha256_init(&c);
    uint64_t off = 0;
    while (off < size) {
        size_t want = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
        ssize_t n = pread_full(fd, buf, want, (off_t)off);
        if (n < 0)
            return ev_fail(err, errno, "file store: read the upload");
        if ((size_t)n != want)
            return ev_fail(err, 0, "file store: the upload shrank while it was read");
        sha256_update(&c, buf, want);
        off += want;
    }
    unsigned char d[SHA256_LEN];
    sha256_final(&c, d);
    sha256_hex(d, id);
    return 0;
}

/* Copies fd's first size bytes to a new ".tmp-" name in the store, read-only and on disk;
 * the name in tmp. */
static int copy_to_tmp(struct file_store *fs, int fd, uint64_t size, char *tmp, size_t tmp_size,
                       struct ev_err *err)
{
    snprintf(tmp, tmp_size, TMP_PREFIX "%ld-%llu", (long)getpid(),
             (unsigned long long)atomic_fetch_add(&fs->tmp_seq, 1));
    cleanup_close int out =
        openat(fs->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
    if (out < 0)
        return ev_fail(err, errno, "file store: create %s/%s", fs->dir, tmp);
    cleanup_free unsigned char *buf = malloc(CHUNK);
    int rc = buf ? 0 : ev_fail(err, ENOMEM, "file store: copy");
    for (uint64_t off = 0; rc == 0 && off < size;) {
        size_t want = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
        ssize_t n = pread_full(fd, buf, want, (off_t)off);
        if (n < 0 || (size_t)n != want)
            rc = ev_fail(err, n < 0 ? errno : 0, "file store: read the upload");
        else if (write_full(out, buf, want) < 0)
            rc = ev_fail(err, errno, "file store: write %s/%s", fs->dir, tmp);
        off += want;
    }
    if (rc == 0 && fdatasync(out) < 0)
        rc = ev_fail(err, errno, "file store: fdatasync %s/%s", fs->dir, tmp);
    if (rc < 0)
        unlinkat(fs->dir_fd, tmp, 0);
    return rc;
}

/* Whether fd is an unnamed file of the store's own file system, which can be linked in. */
static bool linkable(struct file_store *fs, const struct stat *st)
{
    struct stat d;
    return st->st_nlink == 0 && fstat(fs->dir_fd, &d) == 0 && d.st_dev == st->st_dev;
}

/* Gives the prepared file (the unnamed fd, or the ".tmp-" name) its id. Under fs->mu. */
static int name_it(struct file_store *fs, int fd, const char *tmp, const char *id,
                   struct ev_err *err)
{
    if (!tmp[0]) {
        /* linkat(fd, "", ..., AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; through /proc it
         * needs nothing (open(2), O_TMPFILE). */
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, fs->dir_fd, id, AT_SYMLINK_FOLLOW) < 0)
            return ev_fail(err, errno, "file store: link %s/%s", fs->dir, id);
    } else if (renameat(fs->dir_fd, tmp, fs->dir_fd, id) < 0) {
        return ev_fail(err, errno, "file store: rename %s/%s to %s", fs->dir, tmp, id);
    }
    return 0;
}

static bool stored(struct file_store *fs, const char *id)
{
    struct stat st;
    return fstatat(fs->dir_fd, id, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int file_store_put_fd(struct file_store *fs, int fd, struct file_info *info,
                      enum file_put_status *st, struct ev_err *err)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return ev_fail(err, errno, "file store: stat the upload");
    uint64_t size = (uint64_t)sb.st_size;
    info->size = size;
    info->id[0] = '\0';
    if (size > fs->max_file) {
        *st = FILE_PUT_TOO_LARGE;
        return 0;
    }
    if (hash_fd(fd, size, info->id, err) < 0)
        return -1;
    *st = FILE_PUT_OK;
    if (stored(fs, info->id))
        return 0; /* the same bytes: nothing to write, nothing to count */
    pthread_mutex_lock(&fs->mu);
    bool full = fs->used + size > fs->max_total;
    pthread_mutex_unlock(&fs->mu);
    if (full) {
        *st = FILE_PUT_FULL;
        return 0;
    }

    /* Whole and on disk before it has a name: a crash after the name never leaves a file whose
     * bytes are not those its name hashes. */
    char tmp[64] = "";
    if (linkable(fs, &sb)) {
        if (fchmod(fd, 0444) < 0 || fdatasync(fd) < 0)
            return ev_fail(err, errno, "file store: make the upload read-only and durable");
    } else if (copy_to_tmp(fs, fd, size, tmp, sizeof(tmp), err) < 0) {
        return -1;
    }

    int rc = 0;
    pthread_mutex_lock(&fs->mu);
    if (stored(fs, info->id)) {
        /* stored meanwhile by another upload of the same bytes */
    } else if (fs->used + size > fs->max_total) {
        *st = FILE_PUT_FULL;
    } else if ((rc = name_it(fs, fd, tmp, info->id, err)) == 0) {
        fs->used += size;
        fs->count++;
        tmp[0] = '\0'; /* renamed: nothing to remove */
    }
    pthread_mutex_unlock(&fs->mu);
    if (tmp[0])
        unlinkat(fs->dir_fd, tmp, 0);
    if (rc == 0 && *st == FILE_PUT_OK && fsync(fs->dir_fd) < 0)
        return ev_fail(err, errno, "file store: fsync %s", fs->dir);
    return rc;
}

int file_store_put_mem(struct file_store *fs, const void *buf, size_t len, struct file_info *info,
                       enum file_put_status *st, struct ev_err *err)
{
    if (len > fs->max_file) {
        info->id[0] = '\0';
        info->size = len;
        *st = FILE_PUT_TOO_LARGE;
        return 0;
    }
    cleanup_close int fd = file_store_tmpfile(fs, err);
    if (fd < 0)
        return -1;
    if (write_full(fd, buf, len) < 0)
        return ev_fail(err, errno, "file store: write an unnamed file in %s", fs->dir);
    return file_store_put_fd(fs, fd, info, st, err);
}

int file_store_open(struct file_store *fs, const char *id, int *fd, uint64_t *size, bool *found,
                    struct ev_err *err)
{
    *fd = -1;
    *found = false;
    if (!file_id_valid(id))
        return 0;
    cleanup_close int f = openat(fs->dir_fd, id, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (f < 0) {
        if (errno == ENOENT)
            return 0;
        return ev_fail(err, errno, "file store: open %s/%s", fs->dir, id);
    }
    struct stat st;
    if (fstat(f, &st) < 0)
        return ev_fail(err, errno, "file store: stat %s/%s", fs->dir, id);
    if (!S_ISREG(st.st_mode))
        return ev_fail(err, 0, "file store: %s/%s is not a regular file", fs->dir, id);
    if (size)
        *size = (uint64_t)st.st_size;
    *found = true;
    *fd = steal_fd(&f);
    return 0;
}

int file_store_delete(struct file_store *fs, const char *id, bool *found, struct ev_err *err)
{
    *found = false;
    if (!file_id_valid(id))
        return 0;
    int rc = 0;
    struct stat st;
    pthread_mutex_lock(&fs->mu);
    if (fstatat(fs->dir_fd, id, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT)
            rc = ev_fail(err, errno, "file store: stat %s/%s", fs->dir, id);
    } else if (unlinkat(fs->dir_fd, id, 0) < 0) {
        rc = ev_fail(err, errno, "file store: remove %s/%s", fs->dir, id);
    } else {
        *found = true;
        if (S_ISREG(st.st_mode)) {
            fs->used -= (uint64_t)st.st_size;
            fs->count--;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

void file_store_usage(struct file_store *fs, uint64_t *used, uint64_t *count)
{
    pthread_mutex_lock(&fs->mu);
    *used = fs->used;
    *count = fs->count;
    pthread_mutex_unlock(&fs->mu);
}
