/* libFuzzer target: the text helpers every response and log line goes through: base64
 * (decode, and encode/decode round trip), UTF-8 repair, log escaping. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "common/logsafe.h"
#include "common/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n, bad;
    free(base64_decode((const char *)data, size, &n, &bad));

    char *enc = base64_encode(data, size);
    if (enc) {
        void *dec = base64_decode(enc, strlen(enc), &n, &bad);
        if (!dec || n != size || (size && memcmp(dec, data, size) != 0))
            abort(); /* the round trip must be exact */
        free(dec);
        free(enc);
    }

    char *clean = utf8_sanitize((const char *)data, size, &n);
    if (clean) {
        /* the repaired text is valid UTF-8: repairing it again changes nothing */
        size_t n2;
        char *again = utf8_sanitize(clean, n, &n2);
        if (!again || n2 != n || memcmp(again, clean, n) != 0)
            abort();
        free(again);
        free(clean);
    }

    char *s = malloc(size + 1), buf[256];
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        log_safe(s, buf, sizeof(buf));
        for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
            if (*p < 0x20 || *p == 0x7f)
                abort();
        free(s);
    }
    return 0;
}
