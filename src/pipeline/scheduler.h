/* Who runs when (SPEC §5). Submissions run up to max_running at once; an installation or an
 * update (exclusive work) runs alone. Everyone waits in one FIFO queue and only its head can
 * start, so order is first come, first served across all kinds: an exclusive request at the
 * head holds back the submissions behind it while the running ones finish, and no kind can
 * starve another. The queue is bounded: a request that finds it full is refused at once.
 *
 * The bookkeeping (sched_enqueue, sched_withdraw, sched_release) never blocks and is tested
 * on its own; sched_acquire wraps it with the waiting. */
#ifndef ENVICUTOR_SCHEDULER_H
#define ENVICUTOR_SCHEDULER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum sched_kind { SCHED_SUBMISSION, SCHED_EXCLUSIVE };

struct sched_ticket {
    enum sched_kind kind;
    bool granted;
    struct sched_ticket *next;
    /* A ticket whose request waits without a thread (sched_enqueue_job): what its waiting
     * holds, counted against the queue's bounds, and the call that tells its owner, with s->mu
     * held, that the ticket left the queue: granted, or refused because the server stops. */
    uint64_t mem, spilled;
    void (*notify)(struct sched_ticket *t);
    uint64_t tag;
};

/* What the queue may hold before it refuses (503). */
struct sched_bounds {
    unsigned max_waiting; /* requests */
    uint64_t max_mem;     /* bytes of bodies held in memory */
    uint64_t max_spilled; /* bytes of bodies spilled to files */
};

struct sched {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned max_running;
    struct sched_bounds bounds;
    unsigned running;      /* submissions running */
    bool exclusive;        /* exclusive work running */
    unsigned waiting;      /* tickets in the queue */
    uint64_t mem, spilled; /* their costs, summed */
    bool stopping;         /* shutting down: nothing new starts */
    struct sched_ticket *head, *tail;
};

enum sched_outcome { SCHED_GRANTED = 0, SCHED_FULL, SCHED_ABORTED, SCHED_STOPPING };

void sched_init(struct sched *s, unsigned max_running, const struct sched_bounds *bounds);
void sched_destroy(struct sched *s);

/* Bookkeeping, with s->mu held by the caller. enqueue grants at once when it can (then the
 * ticket is not queued); returns SCHED_FULL when the queue is full. */
enum sched_outcome sched_enqueue(struct sched *s, struct sched_ticket *t, enum sched_kind kind);
/* The same for a request that waits without a thread: t's notify, mem, spilled and tag are
 * kept; when it is granted at once (t->granted), notify is not called. */
enum sched_outcome sched_enqueue_job(struct sched *s, struct sched_ticket *t, enum sched_kind kind);
void sched_withdraw(struct sched *s, struct sched_ticket *t); /* a waiting ticket gives up */
/* The waiting job ticket of that tag, or NULL (it was granted, or never queued). */
struct sched_ticket *sched_find_tag(struct sched *s, uint64_t tag);
void sched_release(struct sched *s, enum sched_kind kind); /* a granted one is done */
/* Calls fn for each waiting ticket in queue order with the number of tickets ahead of it. */
void sched_each_waiting(struct sched *s,
                        void (*fn)(struct sched_ticket *t, unsigned ahead, void *ctx), void *ctx);

/* Waits for a turn. abort_fn (may be NULL) is polled every 10 ms while waiting. */
enum sched_outcome sched_acquire(struct sched *s, enum sched_kind kind, bool (*abort_fn)(void *),
                                 void *ctx);
void sched_done(struct sched *s, enum sched_kind kind);
/* Waits until no submission and no exclusive work runs, or until the monotonic clock reaches
 * deadline_ns; returns whether nothing runs. */
bool sched_wait_idle(struct sched *s, uint64_t deadline_ns);
/* Refuses everything from now on and wakes every waiter (which gets SCHED_STOPPING); the
 * waiting job tickets leave the queue, notified with granted false. */
void sched_stop(struct sched *s);

#endif
