/* SHA-1 (RFC 3174), for the one place a protocol requires it: the Sec-WebSocket-Accept key of
 * RFC 6455's handshake. Not for anything that needs collision resistance; use sha256.h. */
#ifndef ENVICUTOR_SHA1_H
#define ENVICUTOR_SHA1_H

#include <stddef.h>

#define SHA1_LEN 20

void sha1(const void *data, size_t len, unsigned char out[SHA1_LEN]);

#endif
