#include "common/path.h"

#include <string.h>
#include <unistd.h>

bool path_next(const char **cursor, const char *name, char *out, size_t size)
{
    size_t name_len = strlen(name);
    while (**cursor) {
        const char *dir = *cursor;
        const char *end = strchr(dir, ':');
        size_t n = end ? (size_t)(end - dir) : strlen(dir);
        *cursor = dir + n + (end ? 1 : 0);
        if (n + name_len + 2 > size)
            continue;
        memcpy(out, dir, n);
        if (n)
            out[n++] = '/';
        memcpy(out + n, name, name_len + 1);
        return true;
    }
    return false;
}

int find_in_path(const char *name, const char *path, char *out, size_t size)
{
    const char *cursor = path;
    for (;;) {
        bool absolute = *cursor == '/';
        if (!path_next(&cursor, name, out, size))
            return -1;
        if (absolute && access(out, X_OK) == 0)
            return 0;
    }
}
