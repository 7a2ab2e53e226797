/* SHA-256 (FIPS 180-4): the content hash of a runtime's definition and the digests API keys are
 * compared by. Small and dependency-free; checked against the standard's test vectors. */
#ifndef ENVICUTOR_SHA256_H
#define ENVICUTOR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

struct sha256 {
    uint32_t h[8];
    uint64_t total;
    unsigned char buf[64];
    size_t used;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, unsigned char out[SHA256_LEN]);
void sha256(const void *data, size_t len, unsigned char out[SHA256_LEN]);
/* 64 lowercase hexadecimal digits and a NUL. */
void sha256_hex(const unsigned char d[SHA256_LEN], char out[2 * SHA256_LEN + 1]);

/* Whether a and b (n bytes each) are equal, in a time that depends on n only. */
int ct_equal(const void *a, const void *b, size_t n);

#endif
