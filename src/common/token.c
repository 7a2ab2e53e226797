#include "common/token.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void token_encode(const unsigned char *raw, char *out)
{
    for (size_t i = 0, o = 0; i < TOKEN_BYTES; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    out[TOKEN_LEN] = '\0';
}

int token_make(char *out, struct ev_err *err)
{
    unsigned char raw[TOKEN_BYTES];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ev_fail(err, errno, "getrandom for a submission token");
        got += (size_t)n;
    }
    token_encode(raw, out);
    return 0;
}

bool token_valid(const char *s)
{
    if (!s || strlen(s) != TOKEN_LEN)
        return false;
    for (size_t i = 0; i < TOKEN_LEN; i++)
        if (!strchr(alphabet, s[i]))
            return false;
    return true;
}
