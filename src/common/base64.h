#ifndef ENVICUTOR_BASE64_H
#define ENVICUTOR_BASE64_H

#include <stddef.h>

/* Standard alphabet with padding; malloc'ed, NUL-terminated. NULL when out of memory. */
char *base64_encode(const void *data, size_t len);

/* Decodes standard base64 (padding optional, no whitespace). Returns a malloc'ed buffer and
 * its length, or NULL with *bad_at set to the offset of the first invalid character (or
 * (size_t)-1 when out of memory). */
void *base64_decode(const char *text, size_t len, size_t *out_len, size_t *bad_at);

#endif
