#include "pipeline/scheduler.h"

#include <time.h>

#include "common/fileutil.h"

void sched_init(struct sched *s, unsigned max_running, const struct sched_bounds *bounds)
{
    *s = (struct sched){.max_running = max_running, .bounds = *bounds};
    pthread_mutex_init(&s->mu, NULL);
    cond_init_monotonic(&s->cv);
}

void sched_destroy(struct sched *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static bool can_start(const struct sched *s, enum sched_kind kind)
{
    if (s->exclusive || s->stopping)
        return false;
    return kind == SCHED_EXCLUSIVE ? s->running == 0 : s->running < s->max_running;
}

static void start(struct sched *s, struct sched_ticket *t)
{
    t->granted = true;
    if (t->kind == SCHED_EXCLUSIVE)
        s->exclusive = true;
    else
        s->running++;
}

static void unqueue_cost(struct sched *s, const struct sched_ticket *t)
{
    s->waiting--;
    s->mem -= t->mem;
    s->spilled -= t->spilled;
}

/* Starts queued tickets from the head for as long as the head may start. */
static void grant_from_head(struct sched *s)
{
    bool any = false;
    while (s->head && can_start(s, s->head->kind)) {
        struct sched_ticket *t = s->head;
        s->head = t->next;
        if (!s->head)
            s->tail = NULL;
        t->next = NULL;
        unqueue_cost(s, t);
        start(s, t);
        if (t->notify)
            t->notify(t);
        any = true;
    }
    if (any)
        pthread_cond_broadcast(&s->cv);
}

enum sched_outcome sched_enqueue_job(struct sched *s, struct sched_ticket *t, enum sched_kind kind)
{
    t->kind = kind;
    t->granted = false;
    t->next = NULL;
    if (s->stopping)
        return SCHED_STOPPING;
    if (!s->head && can_start(s, kind)) {
        start(s, t);
        return SCHED_GRANTED;
    }
    /* Subtractions, so that a cost near UINT64_MAX cannot wrap the sums past a bound. */
    const struct sched_bounds *b = &s->bounds;
    if (s->waiting >= b->max_waiting || t->mem > b->max_mem - s->mem ||
        t->spilled > b->max_spilled - s->spilled)
        return SCHED_FULL;
    if (s->tail)
        s->tail->next = t;
    else
        s->head = t;
    s->tail = t;
    s->waiting++;
    s->mem += t->mem;
    s->spilled += t->spilled;
    return SCHED_GRANTED; /* queued; t->granted says when it may start */
}

enum sched_outcome sched_enqueue(struct sched *s, struct sched_ticket *t, enum sched_kind kind)
{
    *t = (struct sched_ticket){.kind = kind};
    return sched_enqueue_job(s, t, kind);
}

struct sched_ticket *sched_find_tag(struct sched *s, uint64_t tag)
{
    for (struct sched_ticket *p = s->head; p; p = p->next)
        if (p->notify && p->tag == tag)
            return p;
    return NULL;
}

void sched_withdraw(struct sched *s, struct sched_ticket *t)
{
    struct sched_ticket *prev = NULL;
    for (struct sched_ticket *p = s->head; p; prev = p, p = p->next) {
        if (p != t)
            continue;
        if (prev)
            prev->next = p->next;
        else
            s->head = p->next;
        if (s->tail == p)
            s->tail = prev;
        unqueue_cost(s, p);
        break;
    }
    grant_from_head(s); /* the one behind may start now */
}

void sched_release(struct sched *s, enum sched_kind kind)
{
    if (kind == SCHED_EXCLUSIVE)
        s->exclusive = false;
    else if (s->running > 0)
        s->running--;
    grant_from_head(s);
}

enum sched_outcome sched_acquire(struct sched *s, enum sched_kind kind, bool (*abort_fn)(void *),
                                 void *ctx)
{
    struct sched_ticket t;
    pthread_mutex_lock(&s->mu);
    enum sched_outcome o = sched_enqueue(s, &t, kind);
    while (o == SCHED_GRANTED && !t.granted) {
        if (s->stopping) {
            o = SCHED_STOPPING;
        } else if (abort_fn && abort_fn(ctx)) {
            o = SCHED_ABORTED;
        } else {
            struct timespec ts = monotonic_after_ms(10);
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            continue;
        }
        sched_withdraw(s, &t);
    }
    pthread_mutex_unlock(&s->mu);
    return o;
}

void sched_done(struct sched *s, enum sched_kind kind)
{
    pthread_mutex_lock(&s->mu);
    sched_release(s, kind);
    pthread_mutex_unlock(&s->mu);
}

bool sched_wait_idle(struct sched *s, uint64_t deadline_ns)
{
    pthread_mutex_lock(&s->mu);
    bool idle;
    /* In slices, like sched_acquire: a release does not always signal the condition. */
    while (!(idle = s->running == 0 && !s->exclusive) && monotonic_ns() < deadline_ns) {
        struct timespec ts = monotonic_after_ms(10);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return idle;
}

void sched_stop(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    /* Job tickets have no thread to wake: they leave the queue here. Tickets of waiting
     * threads stay until their thread sees stopping and withdraws. */
    struct sched_ticket **pp = &s->head, *last = NULL;
    while (*pp) {
        struct sched_ticket *t = *pp;
        if (!t->notify) {
            last = t;
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        t->next = NULL;
        unqueue_cost(s, t);
        t->notify(t);
    }
    s->tail = last;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_each_waiting(struct sched *s,
                        void (*fn)(struct sched_ticket *t, unsigned ahead, void *ctx), void *ctx)
{
    unsigned ahead = 0;
    for (struct sched_ticket *t = s->head; t; t = t->next)
        fn(t, ahead++, ctx);
}
