/* The file store (SPEC §8): large test inputs and expected outputs uploaded once and named by
 * the SHA-256 of their bytes, kept under <data dir>/files/<64 hex digits>, read-only (0444),
 * until deleted (never evicted).
 *
 *   fd = file_store_tmpfile(fs, &err);          an unnamed file in the store's directory
 *   write the bytes to fd, then
 *   file_store_put_fd(fs, fd, &info, &st, &err) hashes it and links it under its id
 *   file_store_open(fs, id, &rfd, &found, &err) a read-only descriptor for a box's stdin
 *   file_store_delete(fs, id, &found, &err)
 *
 * A file gets its name only once it is whole (an O_TMPFILE linked in, or, where that is not
 * possible, a ".tmp-" name renamed), so a crash mid-upload leaves no half file, and the next
 * start removes any ".tmp-" name. The total size is counted at start and kept exact under a
 * mutex: storing bytes that are already stored counts nothing. Every function is thread-safe. */
#ifndef ENVICUTOR_FILE_STORE_H
#define ENVICUTOR_FILE_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/sha256.h"

#define FILE_ID_LEN (2 * SHA256_LEN)

struct file_store {
    int dir_fd;
    char dir[256];
    uint64_t max_file;  /* MAX_FILE_SIZE_UPLOAD */
    uint64_t max_total; /* FILE_STORE_SIZE */
    pthread_mutex_t mu;
    uint64_t used; /* bytes of the stored files; under mu */
    uint64_t count;
    atomic_uint_fast64_t tmp_seq;
};

struct file_info {
    char id[FILE_ID_LEN + 1];
    uint64_t size;
};

enum file_put_status {
    FILE_PUT_OK,        /* stored now, or already stored */
    FILE_PUT_TOO_LARGE, /* over max_file (413) */
    FILE_PUT_FULL,      /* the total would go over max_total (507) */
};

/* Opens (making it) <data_dir>/files, removes what an interrupted upload left, and counts the
 * stored files. */
int file_store_init(struct file_store *fs, const char *data_dir, uint64_t max_file,
                    uint64_t max_total, struct ev_err *err);
void file_store_close(struct file_store *fs);

/* Whether id is a file id: exactly 64 lowercase hexadecimal digits. Checked by every call
 * below before the file system is touched. */
bool file_id_valid(const char *id);

/* An unnamed, writable file (O_TMPFILE) in the store's directory, which file_store_put_fd
 * can link in without copying; the descriptor, or -1. */
int file_store_tmpfile(struct file_store *fs, struct ev_err *err);

/* Stores the whole of fd (from offset 0 to its end; read with pread, so its offset does not
 * matter): its id and size in *info, and in *st whether it was stored. An fd from
 * file_store_tmpfile is linked in as it is; any other (a memfd, a file elsewhere) is copied.
 * fd is left open for the caller to close. -1 on a system failure. */
int file_store_put_fd(struct file_store *fs, int fd, struct file_info *info,
                      enum file_put_status *st, struct ev_err *err);
/* The same for bytes in memory. */
int file_store_put_mem(struct file_store *fs, const void *buf, size_t len, struct file_info *info,
                       enum file_put_status *st, struct ev_err *err);

/* An O_RDONLY | O_CLOEXEC descriptor of the stored file id in *fd, and its size in *size
 * (may be NULL); *found false (and *fd -1) when there is no such file or id is malformed. */
int file_store_open(struct file_store *fs, const char *id, int *fd, uint64_t *size, bool *found,
                    struct ev_err *err);

/* Removes the file id; *found false when there was none. Descriptors already open on it stay
 * valid (a run that reads it is not disturbed). */
int file_store_delete(struct file_store *fs, const char *id, bool *found, struct ev_err *err);

/* The bytes and the number of the stored files. */
void file_store_usage(struct file_store *fs, uint64_t *used, uint64_t *count);

#endif
