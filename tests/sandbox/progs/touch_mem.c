/* touch_mem MEGABYTES: allocates and writes every page of MEGABYTES MiB, then prints "ok". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    size_t n = (size_t)atol(argv[1]) << 20;
    char *p = malloc(n);
    if (!p)
        return 3;
    memset(p, 1, n);
    printf("ok %zu\n", n);
    return p[n - 1] == 1 ? 0 : 4;
}
