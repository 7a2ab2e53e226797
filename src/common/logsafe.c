#include "common/logsafe.h"

#include <stdio.h>

const char *log_safe(const char *s, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '\\') {
            if (o + 4 >= size)
                break;
            snprintf(buf + o, size - o, "\\x%02x", *p);
            o += 4;
        } else {
            if (o + 1 >= size)
                break;
            buf[o++] = (char)*p;
        }
    }
    buf[o] = '\0';
    return buf;
}
