#include "sandbox/netns.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

struct netns_pool {
    pthread_mutex_t mu;
    pthread_cond_t changed; /* a namespace made or taken, a failure, or stop */
    int fds[NETNS_POOL_MAX];
    unsigned n, ahead;
    bool stop, failed;
    ev_log_fn *log;
    void *log_ctx;
    pthread_t thread;
};

int netns_loopback_up(struct ev_err *err)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ev_fail(err, errno, "socket for loopback");
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    int r = ioctl(fd, SIOCGIFFLAGS, &ifr);
    if (r == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        r = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    close(fd);
    return r < 0 ? ev_fail(err, e, "bring loopback up") : 0;
}

/* Moves the calling thread (only it: the network namespace is per thread) into a new
 * namespace and returns a descriptor that keeps that namespace alive after the thread moves
 * on to the next one. */
static int make_one(struct ev_err *err)
{
    if (unshare(CLONE_NEWNET) < 0)
        return ev_fail(err, errno, "new network namespace");
    if (netns_loopback_up(err) < 0)
        return -1;
    int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, errno, "open /proc/thread-self/ns/net");
    return fd;
}

static void *maker(void *arg)
{
    struct netns_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->n >= p->ahead)
            pthread_cond_wait(&p->changed, &p->mu);
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->mu);
        struct ev_err err;
        int fd = make_one(&err);
        if (fd < 0 && p->log) {
            char line[sizeof(err.msg) + 64];
            snprintf(line, sizeof(line), "network namespaces are made per run from now on: %s",
                     err.msg);
            p->log(p->log_ctx, line);
        }
        pthread_mutex_lock(&p->mu);
        if (fd < 0) {
            p->failed = true;
            pthread_cond_broadcast(&p->changed);
            break;
        }
        p->fds[p->n++] = fd;
        pthread_cond_broadcast(&p->changed);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int netns_pool_start(struct netns_pool **pool, unsigned ahead, ev_log_fn *log, void *log_ctx,
                     struct ev_err *err)
{
    *pool = NULL;
    if (ahead < 1 || ahead > NETNS_POOL_MAX)
        return ev_fail(err, 0, "network namespaces made ahead: 1 to %d, not %u", NETNS_POOL_MAX,
                       ahead);
    struct netns_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return ev_fail(err, ENOMEM, "network namespace pool");
    p->ahead = ahead;
    p->log = log;
    p->log_ctx = log_ctx;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->changed, NULL);
    /* The thread takes no signal: whoever started us decides where signals go. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&p->thread, NULL, maker, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        pthread_cond_destroy(&p->changed);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return ev_fail(err, r, "start the network namespace thread");
    }
    *pool = p;
    return 0;
}

int netns_pool_take(struct netns_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->n == 0 && !p->failed) {
        pthread_cond_broadcast(&p->changed); /* the thread may be waiting for a refill call */
        pthread_cond_wait(&p->changed, &p->mu);
    }
    int fd = -1;
    if (p->n > 0) {
        fd = p->fds[0];
        for (unsigned i = 1; i < p->n; i++)
            p->fds[i - 1] = p->fds[i];
        p->n--;
    }
    pthread_mutex_unlock(&p->mu);
    return fd;
}

void netns_pool_refill(struct netns_pool *p)
{
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->mu);
}

void netns_pool_stop(struct netns_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    for (unsigned i = 0; i < p->n; i++)
        close(p->fds[i]);
    pthread_cond_destroy(&p->changed);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
