#include "common/request_id.h"

#include <stdio.h>
#include <string.h>

bool request_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, REQUEST_ID_MAX + 1);
    if (n == 0 || n > REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

void request_id_make(char *buf, uint32_t prefix, uint64_t seq)
{
    snprintf(buf, REQUEST_ID_MAX + 1, "%08x%08llx", prefix,
             (unsigned long long)(seq & 0xffffffffull));
}
