/* spawn threads|procs N: starts up to N threads (or processes) that stay alive, prints how
 * many it managed, and exits. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <unistd.h>

static void *sleeper(void *arg)
{
    (void)arg;
    pause();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int n = atoi(argv[2]), ok = 0;
    bool threads = strcmp(argv[1], "threads") == 0;
    for (int i = 0; i < n; i++) {
        if (threads) {
            pthread_t t;
            if (pthread_create(&t, NULL, sleeper, NULL) != 0)
                break;
        } else {
            pid_t p = fork();
            if (p < 0)
                break;
            if (p == 0) {
                pause();
                _exit(0);
            }
        }
        ok++;
    }
    printf("%d\n", ok);
    fflush(stdout);
    _exit(0);
}
