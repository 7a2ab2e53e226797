/* touch_mem MEGABYTES [--meet]: allocates and writes every page of MEGABYTES MiB, then prints
 * "ok". With --meet, it then writes a byte to descriptor 3 and waits for a byte (or the end of
 * file) on descriptor 4 before it exits: two of them wired to each other through two FIFOs
 * both hold their memory at the same time, whatever the scheduling, before either exits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The end of file counts as the other's word too: it closes its end only by exiting (or
 * being killed, by the memory limit, say). */
static int meet(void)
{
    char c = 'm';
    ssize_t n;
    do
        n = write(3, &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        return -1;
    do
        n = read(4, &c, 1);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "--meet") == 0))
        return 2;
    size_t n = (size_t)atol(argv[1]) << 20;
    char *p = malloc(n);
    if (!p)
        return 3;
    memset(p, 1, n);
    printf("ok %zu\n", n);
    if (fflush(stdout) != 0)
        return 5;
    if (argc == 3 && meet() < 0)
        return 6;
    return p[n - 1] == 1 ? 0 : 4;
}
