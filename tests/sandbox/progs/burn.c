/* burn SECONDS THREADS CHILDREN: every thread of every process spins until its own CPU clock
 * reaches SECONDS; prints the total CPU the whole tree measured itself, so the sandbox's
 * figure can be checked against the program's own. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double target;

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *spin(void *arg)
{
    (void)arg;
    volatile unsigned long x = 0;
    while (thread_cpu() < target)
        x++;
    return NULL;
}

static void burn(int threads)
{
    pthread_t t[64];
    for (int i = 1; i < threads; i++)
        pthread_create(&t[i], NULL, spin, NULL);
    spin(NULL);
    for (int i = 1; i < threads; i++)
        pthread_join(t[i], NULL);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    target = atof(argv[1]);
    int threads = atoi(argv[2]), children = atoi(argv[3]);
    for (int c = 0; c < children; c++)
        if (fork() == 0) {
            burn(threads);
            _exit(0);
        }
    burn(threads);
    while (wait(NULL) > 0)
        ;
    /* Our own threads' CPU plus what the reaped children used, as the kernel counts them. */
    struct timespec self;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &self);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    double total = (double)self.tv_sec + (double)self.tv_nsec / 1e9 + (double)ru.ru_utime.tv_sec +
                   (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                   (double)ru.ru_stime.tv_usec / 1e6;
    printf("%.6f\n", total);
    return 0;
}
