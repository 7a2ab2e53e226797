#include "common/fileutil.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"

ssize_t write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)n;
    }
    return (ssize_t)done;
}

/* read(2), or pread(2) at off when positioned, until len bytes or the end of the file. */
static ssize_t read_until(int fd, void *buf, size_t len, bool positioned, off_t off)
{
    char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = positioned ? pread(fd, p + done, len - done, off + (off_t)done)
                               : read(fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

ssize_t read_full(int fd, void *buf, size_t len)
{
    return read_until(fd, buf, len, false, 0);
}

ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
{
    return read_until(fd, buf, len, true, off);
}

int read_whole_fd(int fd, size_t cap, const char *what, char **out, size_t *len, struct ev_err *err)
{
    *out = NULL;
    *len = 0;
    /* One byte more than cap is read, to tell a file of cap bytes from a longer one. */
    size_t size = 0, got = 0;
    cleanup_free char *buf = NULL;
    for (;;) {
        size_t want = size ? size * 2 : 16384;
        if (want > cap + 2)
            want = cap + 2;
        char *bigger = realloc(buf, want);
        if (!bigger)
            return ev_fail(err, ENOMEM, "%s", what);
        buf = bigger;
        size = want;
        ssize_t n = pread_full(fd, buf + got, size - 1 - got, (off_t)got);
        if (n < 0)
            return ev_fail(err, errno, "read %s", what);
        got += (size_t)n;
        if (got > cap)
            return ev_fail(err, 0, "%s is larger than %zu bytes", what, cap);
        if (got < size - 1)
            break; /* pread_full stops short only at the end of the file */
    }
    buf[got] = '\0';
    *out = buf;
    buf = NULL;
    *len = got;
    return 0;
}

int make_dir(const char *path, mode_t mode, struct ev_err *err)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return ev_fail(err, errno, "mkdir %s", path);
    return 0;
}

int make_dirs(char *path, size_t skip, mode_t mode, struct ev_err *err)
{
    for (char *p = path + skip; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = make_dir(path, mode, err);
        *p = '/';
        if (r < 0)
            return -1;
    }
    return make_dir(path, mode, err);
}

int write_file_at(int dirfd, const char *name, const char *value, struct ev_err *err)
{
    cleanup_close int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return ev_fail(err, errno, "open %s", name);
    if (write_full(fd, value, strlen(value)) < 0)
        return ev_fail(err, errno, "write '%s' to %s", value, name);
    return 0;
}

int create_file_at(int dirfd, const char *name, mode_t mode, const void *buf, size_t len,
                   struct ev_err *err)
{
    cleanup_close int fd =
        openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return ev_fail(err, errno, "create %s", name);
    if (write_full(fd, buf, len) < 0)
        return ev_fail(err, errno, "write %s", name);
    return 0;
}

ssize_t read_file_at(int dirfd, const char *name, char *buf, size_t size, struct ev_err *err)
{
    cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return ev_fail(err, errno, "open %s", name);
    ssize_t n = read_full(fd, buf, size - 1);
    if (n < 0)
        return ev_fail(err, errno, "read %s", name);
    buf[n] = '\0';
    return n;
}

int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int read_u64_at(int dirfd, const char *name, uint64_t *out, struct ev_err *err)
{
    char buf[64];
    if (read_file_at(dirfd, name, buf, sizeof(buf), err) < 0)
        return -1;
    buf[strcspn(buf, "\n")] = '\0';
    if (strcmp(buf, "max") == 0) {
        *out = UINT64_MAX;
        return 0;
    }
    if (parse_u64(buf, out) < 0)
        return ev_fail(err, 0, "%s: not a number: '%s'", name, buf);
    return 0;
}

int read_keyed_u64_at(int dirfd, const char *name, const char *key, uint64_t *out,
                      struct ev_err *err)
{
    char buf[4096];
    if (read_file_at(dirfd, name, buf, sizeof(buf), err) < 0)
        return -1;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            if (parse_u64(line + klen + 1, out) < 0)
                return ev_fail(err, 0, "%s: bad value for %s", name, key);
            return 0;
        }
        line = next;
    }
    return ev_fail(err, ENOENT, "%s: no key %s", name, key);
}

uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec monotonic_after_ms(unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

int cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int e = pthread_condattr_init(&ca);
    if (e != 0)
        return e;
    e = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (e == 0)
        e = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return e;
}
