#include "pipeline/compile_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"
#include "common/rmtree.h"
#include "common/sha256.h"

#define TMP_PREFIX ".tmp-"

struct cc_item {
    char runtime[64];
    char key[CCACHE_KEY_LEN + 1];
    uint64_t size;
    uint64_t tick; /* last use; larger is more recent */
};

struct ccache {
    pthread_mutex_t mu;
    int dir_fd; /* data_dir/compile-cache */
    uint64_t max_bytes, used, tick;
    struct cc_item *items;
    size_t n, cap;
};

/* ---- the entry's bytes: a header, the results with their outputs, the archive, a digest.
 * Host byte order: entries never leave the machine that wrote them. */

static const char magic[8] = "EVCC0001";

struct cc_header {
    char magic[8];
    uint32_t n_results;
    uint32_t pad;
    uint64_t archive_len;
    uint64_t body_len; /* bytes between this header and the digest */
};

enum { R_MEM = 1, R_CPU = 2, R_WALL = 4, R_OUT_TRUNC = 8, R_ERR_TRUNC = 16 };

struct cc_result {
    int32_t status, exit_code, exit_signal;
    uint32_t flags;
    uint64_t cpu_time_us, wall_time_us, memory_kb, out_len, err_len;
    char message[256];
};

void ccache_entry_free(struct ccache_entry *e)
{
    if (e->has_extract)
        sbx_result_free(&e->extract);
    sbx_result_free(&e->compile);
    free(e->archive);
    memset(e, 0, sizeof(*e));
}

static size_t result_size(const struct sbx_result *r)
{
    return sizeof(struct cc_result) + r->out.len + r->err.len;
}

static char *put_result(char *p, const struct sbx_result *r)
{
    struct cc_result h = {
        .status = (int32_t)r->status,
        .exit_code = r->exit_code,
        .exit_signal = r->exit_signal,
        .flags = (r->memory_limit_exceeded ? R_MEM : 0) | (r->cpu_limit_exceeded ? R_CPU : 0) |
                 (r->wall_limit_exceeded ? R_WALL : 0) | (r->out.truncated ? R_OUT_TRUNC : 0) |
                 (r->err.truncated ? R_ERR_TRUNC : 0),
        .cpu_time_us = r->cpu_time_us,
        .wall_time_us = r->wall_time_us,
        .memory_kb = r->memory_kb,
        .out_len = r->out.len,
        .err_len = r->err.len,
    };
    memcpy(h.message, r->message, sizeof(h.message));
    h.message[sizeof(h.message) - 1] = '\0';
    memcpy(p, &h, sizeof(h));
    p += sizeof(h);
    if (r->out.len)
        memcpy(p, r->out.data, r->out.len);
    p += r->out.len;
    if (r->err.len)
        memcpy(p, r->err.data, r->err.len);
    return p + r->err.len;
}

/* The whole file for e, digest included; malloc'ed. */
static char *serialize(const struct ccache_entry *e, size_t *len)
{
    size_t body = result_size(&e->compile) + e->archive_len;
    if (e->has_extract)
        body += result_size(&e->extract);
    *len = sizeof(struct cc_header) + body + SHA256_LEN;
    char *buf = malloc(*len);
    if (!buf)
        return NULL;
    struct cc_header h = {
        .n_results = e->has_extract ? 2 : 1, .archive_len = e->archive_len, .body_len = body};
    memcpy(h.magic, magic, sizeof(magic));
    memcpy(buf, &h, sizeof(h));
    char *p = buf + sizeof(h);
    if (e->has_extract)
        p = put_result(p, &e->extract);
    p = put_result(p, &e->compile);
    if (e->archive_len)
        memcpy(p, e->archive, e->archive_len);
    p += e->archive_len;
    sha256(buf, (size_t)(p - buf), (unsigned char *)p);
    return buf;
}

static char *dup_bytes(const char *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        if (len)
            memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

/* Reads one result at *p (at most end); -1 when it does not fit or is malformed. */
static int get_result(const char **p, const char *end, struct sbx_result *r)
{
    struct cc_result h;
    if ((size_t)(end - *p) < sizeof(h))
        return -1;
    memcpy(&h, *p, sizeof(h));
    *p += sizeof(h);
    if (h.status < SBX_OK || h.status > SBX_XX || h.out_len > (uint64_t)(end - *p) ||
        h.err_len > (uint64_t)(end - *p) - h.out_len)
        return -1;
    memset(r, 0, sizeof(*r));
    r->status = (enum sbx_status)h.status;
    r->exit_code = h.exit_code;
    r->exit_signal = h.exit_signal;
    r->cpu_time_us = h.cpu_time_us;
    r->wall_time_us = h.wall_time_us;
    r->memory_kb = h.memory_kb;
    r->memory_limit_exceeded = h.flags & R_MEM;
    r->cpu_limit_exceeded = h.flags & R_CPU;
    r->wall_limit_exceeded = h.flags & R_WALL;
    memcpy(r->message, h.message, sizeof(r->message));
    r->message[sizeof(r->message) - 1] = '\0';
    r->out.data = dup_bytes(*p, h.out_len);
    r->out.len = h.out_len;
    r->out.truncated = h.flags & R_OUT_TRUNC;
    *p += h.out_len;
    r->err.data = dup_bytes(*p, h.err_len);
    r->err.len = h.err_len;
    r->err.truncated = h.flags & R_ERR_TRUNC;
    *p += h.err_len;
    if (!r->out.data || !r->err.data) {
        sbx_result_free(r);
        return -1;
    }
    return 0;
}

/* Checks the digest and the structure of a whole file; -1 for anything that is not an entry
 * exactly as serialize wrote it. */
static int parse(const char *buf, size_t len, struct ccache_entry *e)
{
    memset(e, 0, sizeof(*e));
    struct cc_header h;
    if (len < sizeof(h) + SHA256_LEN)
        return -1;
    memcpy(&h, buf, sizeof(h));
    if (memcmp(h.magic, magic, sizeof(magic)) != 0 || (h.n_results != 1 && h.n_results != 2) ||
        h.body_len != len - sizeof(h) - SHA256_LEN || h.archive_len > h.body_len)
        return -1;
    unsigned char d[SHA256_LEN];
    sha256(buf, len - SHA256_LEN, d);
    if (memcmp(d, buf + len - SHA256_LEN, SHA256_LEN) != 0)
        return -1;
    const char *p = buf + sizeof(h);
    const char *end = buf + len - SHA256_LEN - h.archive_len;
    e->has_extract = h.n_results == 2;
    if (e->has_extract && get_result(&p, end, &e->extract) < 0) {
        e->has_extract = false;
        return -1;
    }
    int r = get_result(&p, end, &e->compile);
    if (r < 0 || p != end) {
        if (r == 0)
            sbx_result_free(&e->compile);
        if (e->has_extract)
            sbx_result_free(&e->extract);
        memset(e, 0, sizeof(*e));
        return -1;
    }
    e->archive_len = h.archive_len;
    e->archive = dup_bytes(end, h.archive_len);
    if (!e->archive) {
        ccache_entry_free(e);
        return -1;
    }
    return 0;
}

/* ---- the index */

static bool valid_key(const char *k)
{
    if (strlen(k) != CCACHE_KEY_LEN)
        return false;
    for (const char *c = k; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

static bool valid_runtime(const char *r)
{
    size_t n = strlen(r);
    return n > 0 && n < 64 && !strchr(r, '/') && r[0] != '.';
}

static struct cc_item *find(struct ccache *c, const char *runtime, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].key, key) == 0 && strcmp(c->items[i].runtime, runtime) == 0)
            return &c->items[i];
    return NULL;
}

static void forget(struct ccache *c, struct cc_item *it)
{
    c->used -= it->size;
    *it = c->items[--c->n];
}

static int add(struct ccache *c, const char *runtime, const char *key, uint64_t size, uint64_t tick)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct cc_item *n = realloc(c->items, cap * sizeof(*n));
        if (!n)
            return -1;
        c->items = n;
        c->cap = cap;
    }
    struct cc_item *it = &c->items[c->n++];
    snprintf(it->runtime, sizeof(it->runtime), "%s", runtime);
    snprintf(it->key, sizeof(it->key), "%s", key);
    it->size = size;
    it->tick = tick;
    c->used += size;
    return 0;
}

/* Removes an entry's file; a failure only leaves a file the next start counts again. */
static void unlink_entry(struct ccache *c, const char *runtime, const char *key)
{
    char path[64 + CCACHE_KEY_LEN + 2];
    snprintf(path, sizeof(path), "%s/%s", runtime, key);
    if (unlinkat(c->dir_fd, path, 0) < 0 && errno != ENOENT)
        fprintf(stderr, "envicutor: compile cache: remove %s: %s\n", path, strerror(errno));
}

/* Evicts least recently used entries until `room` more bytes fit. Called with mu held. */
static void make_room(struct ccache *c, uint64_t room)
{
    while (c->n && c->used + room > c->max_bytes) {
        size_t lru = 0;
        for (size_t i = 1; i < c->n; i++)
            if (c->items[i].tick < c->items[lru].tick)
                lru = i;
        unlink_entry(c, c->items[lru].runtime, c->items[lru].key);
        forget(c, &c->items[lru]);
    }
}

/* ---- opening: the scan that rebuilds the index */

static int by_tick(const void *a, const void *b)
{
    const struct cc_item *x = a, *y = b;
    return x->tick < y->tick ? -1 : x->tick > y->tick;
}

static int scan_group(struct ccache *c, const char *runtime, struct ev_err *err)
{
    int gfd = openat(c->dir_fd, runtime, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (gfd < 0)
        return ev_fail(err, errno, "compile cache: open %s", runtime);
    cleanup_closedir DIR *d = fdopendir(gfd);
    if (!d) {
        close(gfd);
        return ev_fail(err, errno, "compile cache: read %s", runtime);
    }
    struct dirent *de;
    while ((errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        bool entry = valid_key(de->d_name) &&
                     fstatat(gfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
        if (!entry) {
            /* a temporary file a crash left, or anything else that is not an entry */
            if (unlinkat(gfd, de->d_name, 0) < 0 && errno != ENOENT &&
                rmtree_at(gfd, de->d_name, err) < 0)
                return -1;
            continue;
        }
        /* the modification time, in nanoseconds, orders the entries until the sort below
         * turns it into ticks */
        uint64_t t = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
        if (add(c, runtime, de->d_name, (uint64_t)st.st_size, t) < 0)
            return ev_fail(err, ENOMEM, "compile cache index");
    }
    if (errno)
        return ev_fail(err, errno, "compile cache: read %s", runtime);
    return 0;
}

static int scan(struct ccache *c, int runtimes_fd, struct ev_err *err)
{
    int dfd = fcntl(c->dir_fd, F_DUPFD_CLOEXEC, 0);
    cleanup_closedir DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return ev_fail(err, errno, "compile cache: read its directory");
    }
    /* collect first: removing while reading a directory may skip entries */
    char(*names)[64] = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char(*nn)[64] = realloc(names, cap * sizeof(*names));
            if (!nn) {
                free(names);
                return ev_fail(err, ENOMEM, "compile cache scan");
            }
            names = nn;
        }
        snprintf(names[n++], 64, "%s", strlen(de->d_name) < 64 ? de->d_name : ".too-long");
    }
    if (errno)
        rc = ev_fail(err, errno, "compile cache: read its directory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct stat st;
        /* a group lives as long as its runtime's directory: one deleted while the server was
         * down (or whose removal a crash interrupted) is dropped here */
        bool live =
            valid_runtime(names[i]) &&
            fstatat(runtimes_fd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
            fstatat(c->dir_fd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        if (!live) {
            if (unlinkat(c->dir_fd, names[i], 0) < 0 && errno != ENOENT)
                rc = rmtree_at(c->dir_fd, names[i], err);
            continue;
        }
        rc = scan_group(c, names[i], err);
    }
    free(names);
    if (rc < 0)
        return -1;
    if (c->n)
        qsort(c->items, c->n, sizeof(*c->items), by_tick);
    for (size_t i = 0; i < c->n; i++)
        c->items[i].tick = i + 1;
    c->tick = c->n;
    make_room(c, 0);
    return 0;
}

struct ccache *ccache_open(const char *data_dir, const char *runtimes_dir, uint64_t max_bytes,
                           struct ev_err *err)
{
    char path[512];
    if ((size_t)snprintf(path, sizeof(path), "%s/compile-cache", data_dir) >= sizeof(path)) {
        ev_fail(err, 0, "compile cache: the path under %s is too long", data_dir);
        return NULL;
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        ev_fail(err, errno, "compile cache: mkdir %s", path);
        return NULL;
    }
    cleanup_close int rfd = open(runtimes_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0) {
        ev_fail(err, errno, "compile cache: open %s", runtimes_dir);
        return NULL;
    }
    struct ccache *c = calloc(1, sizeof(*c));
    if (!c) {
        ev_fail(err, ENOMEM, "compile cache");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    c->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (c->dir_fd < 0) {
        ev_fail(err, errno, "compile cache: open %s", path);
        ccache_close(c);
        return NULL;
    }
    if (scan(c, rfd, err) < 0) {
        ccache_close(c);
        return NULL;
    }
    return c;
}

void ccache_close(struct ccache *c)
{
    if (!c)
        return;
    if (c->dir_fd >= 0)
        close(c->dir_fd);
    free(c->items);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

uint64_t ccache_used(struct ccache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t u = c->used;
    pthread_mutex_unlock(&c->mu);
    return u;
}

/* ---- use */

/* Drops key from the index and the disk when it is still the damaged file we read (a writer
 * may have renamed a good one over it meanwhile: same device and inode then differ). */
static void drop_damaged(struct ccache *c, const char *runtime, const char *key,
                         const struct stat *seen)
{
    char path[64 + CCACHE_KEY_LEN + 2];
    snprintf(path, sizeof(path), "%s/%s", runtime, key);
    pthread_mutex_lock(&c->mu);
    struct stat now;
    if (fstatat(c->dir_fd, path, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == seen->st_ino &&
        now.st_dev == seen->st_dev) {
        struct cc_item *it = find(c, runtime, key);
        if (it)
            forget(c, it);
        unlink_entry(c, runtime, key);
    }
    pthread_mutex_unlock(&c->mu);
    fprintf(stderr, "envicutor: compile cache: %s is damaged; removed\n", path);
}

int ccache_get(struct ccache *c, const char *runtime, const char *key, struct ccache_entry *e,
               bool *found, struct ev_err *err)
{
    *found = false;
    memset(e, 0, sizeof(*e));
    if (!valid_runtime(runtime) || !valid_key(key))
        return 0;
    char path[64 + CCACHE_KEY_LEN + 2];
    snprintf(path, sizeof(path), "%s/%s", runtime, key);
    pthread_mutex_lock(&c->mu);
    struct cc_item *it = find(c, runtime, key);
    cleanup_close int fd = -1;
    uint64_t size = 0;
    if (it) {
        fd = openat(c->dir_fd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            /* gone from the disk behind the index's back: forget it */
            forget(c, it);
        } else {
            it->tick = ++c->tick;
            size = it->size;
            /* the order of use outlives a restart through the modification time */
            if (futimens(fd, NULL) < 0)
                fprintf(stderr, "envicutor: compile cache: touch %s: %s\n", path, strerror(errno));
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (fd < 0)
        return 0;
    /* Read without the lock: the descriptor stays valid whatever happens to the name. */
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ev_fail(err, errno, "compile cache: stat %s", path);
    cleanup_free char *buf = NULL;
    size_t len = 0;
    struct ev_err rerr;
    if (read_whole_fd(fd, (size_t)(size > (uint64_t)st.st_size ? size : (uint64_t)st.st_size) + 1,
                      path, &buf, &len, &rerr) < 0 ||
        parse(buf, len, e) < 0) {
        drop_damaged(c, runtime, key, &st);
        return 0;
    }
    *found = true;
    return 0;
}

int ccache_put(struct ccache *c, const char *runtime, const char *key, const struct ccache_entry *e,
               struct ev_err *err)
{
    if (!valid_runtime(runtime) || !valid_key(key))
        return ev_fail(err, EINVAL, "compile cache: bad name %s/%s", runtime, key);
    size_t len;
    cleanup_free char *buf = serialize(e, &len);
    if (!buf)
        return ev_fail(err, ENOMEM, "compile cache entry");
    if (len > c->max_bytes)
        return 0;
    if (mkdirat(c->dir_fd, runtime, 0700) < 0 && errno != EEXIST)
        return ev_fail(err, errno, "compile cache: mkdir %s", runtime);
    cleanup_close int gfd =
        openat(c->dir_fd, runtime, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (gfd < 0)
        return ev_fail(err, errno, "compile cache: open %s", runtime);
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return ev_fail(err, errno, "getrandom");
    char tmp[sizeof(TMP_PREFIX) + 2 * sizeof(rnd)];
    int k = snprintf(tmp, sizeof(tmp), TMP_PREFIX);
    for (size_t i = 0; i < sizeof(rnd); i++)
        k += snprintf(tmp + k, sizeof(tmp) - (size_t)k, "%02x", rnd[i]);
    /* read-only from the start: nothing, the server included, writes an entry once it is in */
    cleanup_close int fd =
        openat(gfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
    if (fd < 0)
        return ev_fail(err, errno, "compile cache: create %s/%s", runtime, tmp);
    if (write_full(fd, buf, len) != (ssize_t)len || fsync(fd) < 0) {
        int e2 = errno;
        unlinkat(gfd, tmp, 0);
        return ev_fail(err, e2, "compile cache: write %s/%s", runtime, tmp);
    }
    pthread_mutex_lock(&c->mu);
    struct cc_item *old = find(c, runtime, key);
    if (old)
        forget(c, old);
    make_room(c, len);
    int rc = 0;
    if (renameat(gfd, tmp, gfd, key) < 0) {
        rc = ev_fail(err, errno, "compile cache: rename %s/%s", runtime, tmp);
        unlinkat(gfd, tmp, 0);
    } else if (add(c, runtime, key, len, ++c->tick) < 0) {
        unlinkat(gfd, key, 0);
        rc = ev_fail(err, ENOMEM, "compile cache index");
    }
    pthread_mutex_unlock(&c->mu);
    /* the rename is durable with its directory; a crash before that loses the entry, never
     * half of it */
    if (rc == 0 && fsync(gfd) < 0)
        fprintf(stderr, "envicutor: compile cache: sync %s: %s\n", runtime, strerror(errno));
    return rc;
}

int ccache_drop_runtime(struct ccache *c, const char *runtime, struct ev_err *err)
{
    if (!valid_runtime(runtime))
        return 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n;) {
        if (strcmp(c->items[i].runtime, runtime) == 0)
            forget(c, &c->items[i]);
        else
            i++;
    }
    int rc = rmtree_at(c->dir_fd, runtime, err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}
