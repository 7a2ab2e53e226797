#include "common/filename.h"

#include <string.h>

bool plain_file_name(const char *name)
{
    size_t n = strnlen(name, FILE_NAME_MAX + 1);
    return n > 0 && n <= FILE_NAME_MAX && !strchr(name, '/') && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}
