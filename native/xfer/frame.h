/* The frame on the wire: its constants, the 48-byte header and its packing, the frame and
 * whole-stream checksums, and the AES-256-GCM tag that seals every frame (pz_seal, pz_open).
 * docs/protocol.md describes the format; ployz/transfer/protocol.py holds the same constants. */
#ifndef PLOYZ_XFER_FRAME_H
#define PLOYZ_XFER_FRAME_H

#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define PZ_MAGIC 0x325a4c50u /* the bytes "PLZ2" read as a little-endian u32 */
#define PZ_HEADER_SIZE 48
#define PZ_AAD_SIZE 32 /* the header without its tag: what the tag authenticates */
#define PZ_TAG_SIZE 16
#define PZ_KEY_SIZE 32
#define PZ_NONCE_DATA 1u
#define PZ_NONCE_END 2u
#define PZ_FLAG_ZSTD 0x1u
#define PZ_FLAG_END 0x2u
#define PZ_FLAG_CONTROL 0x4u
#define PZ_END_PAYLOAD 16
#define PZ_MAX_FRAME (8u << 20)

typedef struct {
    uint32_t magic;
    uint16_t flags;
    uint16_t reserved;
    uint32_t wire_len;
    uint32_t raw_len;
    uint64_t offset;
    uint64_t checksum;
    unsigned char tag[PZ_TAG_SIZE];
} pz_header;

static inline void pz_put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void pz_put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t pz_get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint64_t pz_get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void pz_header_pack(const pz_header *h, unsigned char *out) {
    pz_put32(out, h->magic);
    out[4] = (unsigned char)(h->flags & 0xff);
    out[5] = (unsigned char)(h->flags >> 8);
    out[6] = (unsigned char)(h->reserved & 0xff);
    out[7] = (unsigned char)(h->reserved >> 8);
    pz_put32(out + 8, h->wire_len);
    pz_put32(out + 12, h->raw_len);
    pz_put64(out + 16, h->offset);
    pz_put64(out + 24, h->checksum);
    memcpy(out + PZ_AAD_SIZE, h->tag, PZ_TAG_SIZE);
}

static void pz_header_unpack(const unsigned char *in, pz_header *h) {
    h->magic = pz_get32(in);
    h->flags = (uint16_t)(in[4] | (in[5] << 8));
    h->reserved = (uint16_t)(in[6] | (in[7] << 8));
    h->wire_len = pz_get32(in + 8);
    h->raw_len = pz_get32(in + 12);
    h->offset = pz_get64(in + 16);
    h->checksum = pz_get64(in + 24);
    memcpy(h->tag, in + PZ_AAD_SIZE, PZ_TAG_SIZE);
}

/* ------------------------------------------------------------------------------------------ */
/* Frame tags: AES-256-GCM under the session key of one direction of one connection            */

/* Every frame after the handshake carries a tag made with the key its direction derived from
 * the authenticated key exchange, over a nonce that its kind and offset make unique within the
 * connection (keys are new on every connection). Without encryption the tag is a GMAC over the
 * header and the payload; with it the payload is encrypted in place and the header is the
 * associated data. Either way a frame that anyone without the key changed, or moved to another
 * offset, fails before any of it is decoded or written. */
typedef struct {
    EVP_CIPHER_CTX *ctx;
    int encrypt;
} pz_sealer;

static int pz_sealer_init(pz_sealer *z, const unsigned char *key, int encrypt, int sealing) {
    z->encrypt = encrypt;
    z->ctx = EVP_CIPHER_CTX_new();
    if (!z->ctx) return -1;
    int ok = sealing ? EVP_EncryptInit_ex(z->ctx, EVP_aes_256_gcm(), NULL, key, NULL)
                     : EVP_DecryptInit_ex(z->ctx, EVP_aes_256_gcm(), NULL, key, NULL);
    return ok == 1 ? 0 : -1;
}

static void pz_sealer_free(pz_sealer *z) {
    EVP_CIPHER_CTX_free(z->ctx);
    z->ctx = NULL;
}

static void pz_nonce(unsigned char nonce[12], uint32_t kind, uint64_t value) {
    pz_put32(nonce, kind);
    pz_put64(nonce + 4, value);
}

/* Seals a frame: `hdr` holds the packed header (its tag still to be written), `payload` its
 * `len` wire bytes, encrypted in place when the session encrypts. Returns 0 or -1. */
static int pz_seal(pz_sealer *z, unsigned char *hdr, unsigned char *payload, size_t len,
                   uint32_t kind, uint64_t value) {
    unsigned char nonce[12];
    int n;
    pz_nonce(nonce, kind, value);
    if (EVP_EncryptInit_ex(z->ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(z->ctx, NULL, &n, hdr, PZ_AAD_SIZE) != 1)
        return -1;
    if (len && (z->encrypt ? EVP_EncryptUpdate(z->ctx, payload, &n, payload, (int)len)
                           : EVP_EncryptUpdate(z->ctx, NULL, &n, payload, (int)len)) != 1)
        return -1;
    if (EVP_EncryptFinal_ex(z->ctx, payload + len, &n) != 1) return -1;
    return EVP_CIPHER_CTX_ctrl(z->ctx, EVP_CTRL_GCM_GET_TAG, PZ_TAG_SIZE, hdr + PZ_AAD_SIZE) == 1
               ? 0 : -1;
}

/* Checks a received frame's tag (and decrypts its payload in place when the session
 * encrypts). Returns 1 when the frame is authentic, 0 when it is not, -1 on a library error. */
static int pz_open(pz_sealer *z, const unsigned char *hdr, unsigned char *payload, size_t len,
                   uint32_t kind, uint64_t value) {
    unsigned char nonce[12], tag[PZ_TAG_SIZE];
    int n;
    pz_nonce(nonce, kind, value);
    memcpy(tag, hdr + PZ_AAD_SIZE, PZ_TAG_SIZE);
    if (EVP_DecryptInit_ex(z->ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(z->ctx, NULL, &n, hdr, PZ_AAD_SIZE) != 1)
        return -1;
    if (len && (z->encrypt ? EVP_DecryptUpdate(z->ctx, payload, &n, payload, (int)len)
                           : EVP_DecryptUpdate(z->ctx, NULL, &n, payload, (int)len)) != 1)
        return -1;
    if (EVP_CIPHER_CTX_ctrl(z->ctx, EVP_CTRL_GCM_SET_TAG, PZ_TAG_SIZE, tag) != 1) return -1;
    return EVP_DecryptFinal_ex(z->ctx, payload + len, &n) == 1 ? 1 : 0;
}

/* libxxhash's runtime dispatch (xxh_x86dispatch): the widest vector unit the CPU has. Inlined,
 * xxh3 would be compiled for the build's baseline, SSE2, which is 2.5x slower than AVX2 on
 * current x86 and, under software emulation (the ZFS VM), 1.8x slower than even the scalar
 * code. Declared here because its header cannot be combined with XXH_INLINE_ALL. */
uint64_t XXH3_64bits_withSeed_dispatch(const void *input, size_t len, uint64_t seed);

/* A frame's checksum is xxh3-64 of its decoded bytes seeded with its stream offset, so a frame
 * replayed at the wrong place fails like a corrupted one. */
static inline uint64_t pz_frame_checksum(const void *data, size_t len, uint64_t offset) {
    return XXH3_64bits_withSeed_dispatch(data, len, offset);
}

/* xxh3-64 over the frame checksums as little-endian u64s (this machine is little-endian; the
 * build refuses big-endian targets below). */
static uint64_t pz_chain(const uint64_t *sums, size_t n) {
    return XXH3_64bits(sums, n * sizeof *sums);
}

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the whole-stream checksum hashes frame checksums in host order: little-endian only"
#endif

#endif
