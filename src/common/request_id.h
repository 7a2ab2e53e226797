/* Request ids: one per HTTP request, returned as X-Request-Id, written in the server's log line
 * for the request and in the helper's lines about its runs, so that one request can be followed
 * through both logs. A client may send its own; it is kept when valid: 1 to REQUEST_ID_MAX
 * characters of [A-Za-z0-9._-], which can neither break a log line nor a header. */
#ifndef ENVICUTOR_REQUEST_ID_H
#define ENVICUTOR_REQUEST_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REQUEST_ID_MAX 64

bool request_id_valid(const char *s);

/* An id of our own: 16 hex digits from a per-process random prefix and a sequence number, so
 * ids do not repeat across restarts the way a bare counter's would. buf: REQUEST_ID_MAX + 1. */
void request_id_make(char *buf, uint32_t prefix, uint64_t seq);

#endif
