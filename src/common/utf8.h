#ifndef ENVICUTOR_UTF8_H
#define ENVICUTOR_UTF8_H

#include <stddef.h>

/* Returns a malloc'ed copy of buf in which every byte sequence that is not valid UTF-8 is
 * replaced by U+FFFD, so output is never dropped silently; NUL bytes are kept. *out_len gets
 * the new length. NULL when out of memory. */
char *utf8_sanitize(const char *buf, size_t len, size_t *out_len);

#endif
