/* The pump: one poll loop that moves a child's output (and, when asked, its input) while it
 * waits for the events that end a run. Both supervisors use it: the sandbox's run watcher
 * (sandbox/run.c), which adds its CPU counter and wall clock around each step, and the Nix
 * tool runner (privsep/nix.c), which waits on a pidfd with a deadline.
 *
 *   struct pump_stream s[2];   pump_reader(&s[0], out_fd, pump_buffer_consume, &buf, &err);
 *   int ev[1] = {pidfd};       pump_run(s, 2, ev, 1, deadline_ns, &err)   -> 0 (ev[0] fired)
 *
 * A stream is a pipe end and a part that deals with its bytes: a consumer for what is read (the
 * capped buffer below, or a callback streaming chunks to a client), a producer for what is
 * written (a program's stdin fed as it goes). Streams are not tied to one run: joining two
 * runs' pipes (an interactor and a solution) is a consumer of one run's output that is the
 * producer of the other's input, pumped in one call. */
#ifndef ENVICUTOR_PUMP_H
#define ENVICUTOR_PUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

/* Takes a chunk that was read. Returns 0, or -1 when it could not (out of memory, a client gone):
 * the stream is marked failed and the pump still reads, so that the writer is never blocked. */
typedef int (*pump_consume_fn)(void *ctx, const char *buf, size_t n);
/* Fills buf with up to size bytes to write. Returns their count, 0 at the end of the input
 * (the pipe is then closed), or -1 on failure (the stream is marked failed and closed). */
typedef ssize_t (*pump_produce_fn)(void *ctx, char *buf, size_t size);

struct pump_stream {
    int fd; /* non-blocking, owned by the stream; -1 once it has ended */
    pump_consume_fn consume;
    pump_produce_fn produce; /* set: a writing stream */
    void *ctx;
    bool failed;
    char pending[4096]; /* produced and not yet written */
    size_t pend_off, pend_len;
};

/* Makes fd (which the stream then owns) non-blocking and a reading or a writing stream. */
int pump_reader(struct pump_stream *s, int fd, pump_consume_fn consume, void *ctx,
                struct ev_err *err);
int pump_writer(struct pump_stream *s, int fd, pump_produce_fn produce, void *ctx,
                struct ev_err *err);
void pump_close(struct pump_stream *s);

/* Reads what a reading stream has now. Returns false once it has ended (closed). */
bool pump_drain(struct pump_stream *s);

/* One poll: moves data on the streams that are ready and sets bit i of *ready for each
 * events[i] that became readable (descriptors < 0 are skipped). timeout_ms -1: no limit.
 * Returns 0 (also on EINTR, with *ready 0), or -1 when poll failed. */
int pump_step(struct pump_stream *s, size_t ns, const int *events, size_t nev, int timeout_ms,
              unsigned *ready, struct ev_err *err);

#define PUMP_TIMEOUT (-2) /* the deadline passed */
#define PUMP_ENDED (-3)   /* every stream ended and there was no event to wait for */
/* Pumps until an event fires (returns the lowest such index), the deadline on the monotonic
 * clock passes (0: none), or nothing is left to watch; -1 when poll failed. */
int pump_run(struct pump_stream *s, size_t ns, const int *events, size_t nev, uint64_t deadline_ns,
             struct ev_err *err);

/* The consumer that keeps what is read in memory up to cap bytes; the rest is read and dropped
 * (truncated). data grows as needed and is NUL-terminated; a caller may give it size bytes
 * ahead. */
struct pump_buffer {
    char *data;
    size_t len, size;
    uint64_t cap;
    bool truncated;
};
int pump_buffer_consume(void *buffer, const char *buf, size_t n);

#endif
