/* Network namespaces made ahead of the runs that take them.
 *
 * Each run has a network namespace of its own, with only its loopback interface, up (SPEC
 * §2). Making one is the costliest step of a run's set-up (bench/nsclone.c on Linux 6.18: a
 * clone takes 0.5-0.7 ms with a new network namespace, 0.14-0.17 ms with the other five), so in
 * a server a thread makes them ahead of the runs that take them. A one-shot command gains
 * nothing from it: measured, a thread making its one namespace beside the rest of the set-up
 * slowed that set-up down by as much as it saved. A namespace from the pool is never used
 * twice and nothing runs in it before the run that takes it; the thread that makes it only
 * brings the loopback interface up, which each run used to do itself. */
#ifndef ENVICUTOR_NETNS_H
#define ENVICUTOR_NETNS_H

#include "common/error.h"

#define NETNS_POOL_MAX 8

struct netns_pool;

/* Starts a thread that keeps `ahead` (1 to NETNS_POOL_MAX) namespaces ready. The thread
 * reports through log (NULL: not at all) when it gives up. */
int netns_pool_start(struct netns_pool **pool, unsigned ahead, ev_log_fn *log, void *log_ctx,
                     struct ev_err *err);

/* A descriptor of a fresh namespace, waiting for the thread if it is making one; -1 when the
 * thread has failed (the caller then makes its own namespace). */
int netns_pool_take(struct netns_pool *pool);

/* Lets the thread make up for the namespaces taken. Taking does not: making one while a run
 * sets its box up slows that set-up down (they compete for the kernel's locks and the CPUs), so
 * a run calls this once its program has started. */
void netns_pool_refill(struct netns_pool *pool);

/* Stops the thread and closes the namespaces nobody took. */
void netns_pool_stop(struct netns_pool *pool);

/* Brings up `lo` in the calling thread's network namespace. */
int netns_loopback_up(struct ev_err *err);

#endif
