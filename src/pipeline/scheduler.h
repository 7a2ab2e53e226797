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

enum sched_kind { SCHED_SUBMISSION, SCHED_EXCLUSIVE };

struct sched_ticket {
    enum sched_kind kind;
    bool granted;
    struct sched_ticket *next;
};

struct sched {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned max_running, max_waiting;
    unsigned running; /* submissions running */
    bool exclusive;   /* exclusive work running */
    unsigned waiting; /* tickets in the queue */
    bool stopping;    /* shutting down: nothing new starts */
    struct sched_ticket *head, *tail;
};

enum sched_outcome { SCHED_GRANTED = 0, SCHED_FULL, SCHED_ABORTED, SCHED_STOPPING };

void sched_init(struct sched *s, unsigned max_running, unsigned max_waiting);
void sched_destroy(struct sched *s);

/* Bookkeeping, with s->mu held by the caller. enqueue grants at once when it can (then the
 * ticket is not queued); returns SCHED_FULL when the queue is full. */
enum sched_outcome sched_enqueue(struct sched *s, struct sched_ticket *t, enum sched_kind kind);
void sched_withdraw(struct sched *s, struct sched_ticket *t); /* a waiting ticket gives up */
void sched_release(struct sched *s, enum sched_kind kind);    /* a granted one is done */

/* Waits for a turn. abort_fn (may be NULL) is polled every 10 ms while waiting. */
enum sched_outcome sched_acquire(struct sched *s, enum sched_kind kind, bool (*abort_fn)(void *),
                                 void *ctx);
void sched_done(struct sched *s, enum sched_kind kind);
/* Refuses everything from now on and wakes every waiter (which gets SCHED_STOPPING). */
void sched_stop(struct sched *s);

#endif
