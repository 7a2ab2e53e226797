/* Small file helpers: every call checks its result, retries on EINTR and opens with O_CLOEXEC. */
#ifndef ENVICUTOR_FILEUTIL_H
#define ENVICUTOR_FILEUTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "common/error.h"

/* write(2)/read(2) that retry on EINTR and short counts. read_full stops at end of file and
 * returns the number of bytes read. */
ssize_t write_full(int fd, const void *buf, size_t len);
ssize_t read_full(int fd, void *buf, size_t len);

/* pread(2) that retries on EINTR and short counts: reads at off without using or moving the
 * descriptor's offset, stops at end of file and returns the number of bytes read. */
ssize_t pread_full(int fd, void *buf, size_t len, off_t off);

/* Reads the whole of fd, from offset 0 to its end, into *out (malloc'ed, NUL-terminated, *len
 * bytes before the NUL); more than cap bytes is an error. pread, so a file another process
 * wrote through a shared descriptor reads from its start; and no size from fstat, so /proc
 * files (size 0) read whole too. cap at most SIZE_MAX / 4. `what` names the file in
 * messages. */
int read_whole_fd(int fd, size_t cap, const char *what, char **out, size_t *len,
                  struct ev_err *err);

/* Writes a whole string to dirfd/name (no O_CREAT: for kernel control files such as cgroup
 * knobs). `what` names the file in the error message. */
int write_file_at(int dirfd, const char *name, const char *value, struct ev_err *err);

/* Creates (or truncates) dirfd/name with `mode` and writes len bytes, without following a
 * link at name. */
int create_file_at(int dirfd, const char *name, mode_t mode, const void *buf, size_t len,
                   struct ev_err *err);

/* Reads at most size-1 bytes of dirfd/name into buf and NUL-terminates it; returns the length. */
ssize_t read_file_at(int dirfd, const char *name, char *buf, size_t size, struct ev_err *err);

/* Reads a file holding one unsigned decimal number ("max" reads as UINT64_MAX). */
int read_u64_at(int dirfd, const char *name, uint64_t *out, struct ev_err *err);

/* Finds "key value" in a flat-keyed file such as cpu.stat or memory.events. */
int read_keyed_u64_at(int dirfd, const char *name, const char *key, uint64_t *out,
                      struct ev_err *err);

/* mkdir that takes an existing name as success, without looking at what it is (callers that
 * care, such as the host's run directory, check it themselves). */
int make_dir(const char *path, mode_t mode, struct ev_err *err);

/* mkdir -p: makes each directory of path after its first `skip` bytes (a prefix known to
 * exist), then path itself, with make_dir and mode. path is cut at each '/' in turn and
 * restored; nothing is allocated (the sandbox's child builds its mount points with it). */
int make_dirs(char *path, size_t skip, mode_t mode, struct ev_err *err);

/* Parses a whole string as a decimal number; rejects signs, junk and overflow. */
int parse_u64(const char *s, uint64_t *out);

/* Monotonic clock in nanoseconds. */
uint64_t monotonic_ns(void);

/* The CLOCK_MONOTONIC time ms milliseconds from now, for pthread_cond_timedwait on a condition
 * variable set to that clock. */
struct timespec monotonic_after_ms(unsigned ms);

/* A condition variable whose timed waits count on CLOCK_MONOTONIC (monotonic_after_ms), so
 * that a change of the wall clock neither cuts nor stretches them. 0 or an errno value. */
int cond_init_monotonic(pthread_cond_t *cv);

#endif
