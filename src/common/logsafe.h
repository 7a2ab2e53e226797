/* Text from a client (a URL path, a runtime name, a file name inside an error) written to
 * the server's log. */
#ifndef ENVICUTOR_LOGSAFE_H
#define ENVICUTOR_LOGSAFE_H

#include <stddef.h>

/* Copies s into buf (always NUL-terminated, cut to fit), writing control characters, DEL
 * and backslashes as \xHH escapes, so a client can neither forge log lines (a newline in a
 * URL-decoded path or a runtime name) nor send escape sequences to a terminal. Returns buf. */
const char *log_safe(const char *s, char *buf, size_t size);

#endif
