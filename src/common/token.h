/* Tokens of asynchronous submissions: names a client may be told but never guess. 24 bytes
 * from getrandom (192 bits), written in the URL-safe base64 alphabet without padding, so that
 * a token goes in a path as it is and, once token_valid has said so, in a file name too. */
#ifndef ENVICUTOR_TOKEN_H
#define ENVICUTOR_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

#define TOKEN_BYTES 24
#define TOKEN_LEN 32 /* characters: 4 for every 3 bytes */

/* The text of raw (TOKEN_BYTES bytes) in out (TOKEN_LEN + 1 with its NUL). */
void token_encode(const unsigned char *raw, char *out);
/* A fresh token from the kernel's random source (waits for it to be seeded, as getrandom
 * does by default; never a weaker source). */
int token_make(char *out, struct ev_err *err);
/* Whether s is exactly a token's shape: TOKEN_LEN characters of [A-Za-z0-9_-]. */
bool token_valid(const char *s);

#endif
