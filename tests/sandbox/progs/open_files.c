/* Opens /dev/null until it fails; prints the highest descriptor number + 1 reached. */
#include <fcntl.h>
#include <stdio.h>

int main(void)
{
    int last = 2, fd;
    while ((fd = open("/dev/null", O_RDONLY)) >= 0)
        last = fd;
    printf("%d\n", last + 1);
    return 0;
}
