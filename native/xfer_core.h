/* The transfer engine's data path: framing, checksums, zstd and the send/receive pipelines.
 *
 * Everything here runs without the GIL. Python sets a stream up (handshake, negotiation, resume
 * point), calls pz_send_run or pz_recv_run once per connection, and reads the counters from
 * another thread for progress. The wire format is documented in docs/protocol.md; the Python
 * side of it (ployz/transfer/protocol.py) must agree with the constants below, which a unit test
 * checks.
 *
 * Each pipeline is three stages over a ring of frame slots:
 *   sender:   reader (read the source, hash)  -> workers (zstd)        -> writer (socket)
 *   receiver: reader (socket, header checks)  -> workers (unzstd, hash) -> writer (sink)
 * With codec none, and on a sender whose codec auto sends every frame raw (to a loopback peer),
 * there are no workers: the reader hashes, so a raw stream costs two threads,
 * each overlapping its copy with the other's, like mbuffer's reader and writer. With zstd,
 * frames that travel raw (codec auto choosing raw, a raw frame received) skip the workers the
 * same way, whenever no earlier frame is still with a worker. The stages'
 * threads carry names (pz-send-read, pz-send-zstd, pz-recv-read, pz-recv-unzstd; the writers
 * run on the caller's thread) so that per-thread profiles say which stage spends what.
 *
 * Between pipes (the sender's source is `zfs send`'s pipe, the receiver's sink the pipe into
 * `zfs receive`) a frame that travels raw does not pass through memory: each slot owns a pipe,
 * and the frame moves source -> slot pipe -> socket on one side and socket -> slot pipe -> sink
 * on the other with splice(2), which hands pages over instead of copying them. Its checksum
 * reads a tee(2) of the slot pipe, the one copy such a frame costs on each side; the receiver
 * splices a frame into the sink only after that checksum matched. A frame whose pages do not fit
 * its slot pipe (a slot pipe holds a bounded number of pages, which partly filled ones waste)
 * finishes through memory like any other.
 */
#ifndef PLOYZ_XFER_CORE_H
#define PLOYZ_XFER_CORE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <openssl/evp.h>
#include <xxhash.h>
#include <zstd.h>

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
#define PZ_MAX_SLOTS 32
#define PZ_MAX_WORKERS 8

enum pz_codec { PZ_CODEC_NONE = 0, PZ_CODEC_ZSTD = 1, PZ_CODEC_AUTO = 2 };

/* Error kinds, mapped to typed Python exceptions by ployz.transfer. */
enum pz_error {
    PZ_OK = 0,
    PZ_E_CONNECTION = 1, /* peer closed or reset the connection, or the socket failed */
    PZ_E_TIMEOUT = 2,    /* no progress on the socket within the idle timeout */
    PZ_E_PROTOCOL = 3,   /* malformed or unexpected frame */
    PZ_E_CHECKSUM = 4,   /* a frame's bytes do not match its checksum */
    PZ_E_SOURCE = 5,     /* reading the source failed */
    PZ_E_SINK = 6,       /* writing the sink failed */
    PZ_E_CODEC = 7,      /* zstd failed to compress or decompress */
    PZ_E_RESOURCE = 8,   /* out of memory or threads */
    PZ_E_STOPPED = 9,    /* stopped on request */
    PZ_E_INTEGRITY = 10, /* a frame failed its authentication tag: damaged or altered */
    PZ_E_FRAMING = 11,   /* a header that cannot be right (lengths, magic): the stream is lost */
};

/* ------------------------------------------------------------------------------------------ */
/* Frame header                                                                               */

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

/* ------------------------------------------------------------------------------------------ */
/* Shared pipeline machinery                                                                  */

/* What is wrong with a received frame; the writer, reaching it in order after the frames before
 * it are written, ends the run with it. */
enum pz_bad { PZ_BAD_NONE = 0, PZ_BAD_CHECKSUM = 1, PZ_BAD_TAG = 2 };

/* FREE -> FILLED (read) -> WORKING (claimed by a worker) -> READY (to write) -> FREE */
enum pz_slot_state { SLOT_FREE = 0, SLOT_FILLED = 1, SLOT_WORKING = 2, SLOT_READY = 3 };

typedef struct {
    int state;
    int bad;              /* receiver: a PZ_BAD_* fault found in the frame */
    uint16_t flags;
    uint32_t raw_len;
    uint32_t wire_len;
    uint64_t offset;
    uint64_t checksum;
    unsigned char *raw;   /* decoded bytes */
    unsigned char *wire;  /* encoded bytes (compressed frames only) */
    int in_pipe;          /* the frame's bytes are (also) in the slot pipe, to be spliced on */
    int pipe_rd, pipe_wr; /* the slot pipe; -1 when the ring has none */
} pz_slot;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int nslots;
    pz_slot slots[PZ_MAX_SLOTS];
    uint64_t next_work;   /* next sequence number a worker should pick up */
    uint64_t written;     /* sequence numbers below this have been written out */
    uint64_t end_seq;     /* sequence number of the end marker (UINT64_MAX: unknown yet) */
    int piped;            /* slots own pipes: raw frames move by splice */
    int check_rd, check_wr; /* the pipe a frame is tee'd into to read it for its checksum */
    int discard_fd;       /* /dev/null, where a slot pipe's copy of a compressed frame goes */
    int stop;
    int err;
    int err_errno;
    char errmsg[256];
} pz_ring;

static void pz_ring_fail(pz_ring *r, int kind, int e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the first error and wakes every stage so that they all wind down. */
#include <stdarg.h>
static void pz_ring_fail(pz_ring *r, int kind, int e, const char *fmt, ...) {
    pthread_mutex_lock(&r->mu);
    if (!r->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
        va_end(ap);
        r->err = kind;
        r->err_errno = e;
    }
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void pz_close(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* A pipe that holds at least one frame. A frame of full pages needs `frame` bytes of pipe, one
 * split into partly filled pages (a `zfs send` record header on a page of its own, a network
 * segment per page) needs more, so the pipe gets four times that if it may (without privilege
 * pipes stop at /proc/sys/fs/pipe-max-size). */
static int pz_pipe_open(int *rd, int *wr, size_t frame) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    for (size_t size = 4 * frame; size >= frame; size /= 2) {
        if (fcntl(fds[1], F_SETPIPE_SZ, (int)size) >= (int)frame) {
            *rd = fds[0];
            *wr = fds[1];
            return 0;
        }
    }
    close(fds[0]);
    close(fds[1]);
    return -1;
}

static void pz_ring_close_pipes(pz_ring *r) {
    for (int i = 0; i < r->nslots; i++) {
        pz_close(&r->slots[i].pipe_rd);
        pz_close(&r->slots[i].pipe_wr);
    }
    pz_close(&r->check_rd);
    pz_close(&r->check_wr);
    pz_close(&r->discard_fd);
    r->piped = 0;
}

/* Gives every slot a pipe (and the ring its check pipe) when `piped` asks for it; without them
 * (no pipes left, a size the kernel refuses) the ring simply moves every frame through memory. */
static void pz_ring_open_pipes(pz_ring *r, size_t frame) {
    r->piped = 1;
    for (int i = 0; i < r->nslots && r->piped; i++)
        r->piped = pz_pipe_open(&r->slots[i].pipe_rd, &r->slots[i].pipe_wr, frame) == 0;
    if (r->piped) r->piped = pz_pipe_open(&r->check_rd, &r->check_wr, frame) == 0;
    if (r->piped) r->piped = (r->discard_fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) >= 0;
    if (!r->piped) pz_ring_close_pipes(r);
}

static int pz_ring_init(pz_ring *r, int nslots, size_t raw_size, size_t wire_size, int piped) {
    memset(r, 0, sizeof *r);
    r->nslots = nslots;
    r->end_seq = UINT64_MAX;
    r->check_rd = r->check_wr = r->discard_fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    for (int i = 0; i < nslots; i++) {
        r->slots[i].pipe_rd = r->slots[i].pipe_wr = -1;
        r->slots[i].raw = malloc(raw_size);
        r->slots[i].wire = wire_size ? malloc(wire_size) : NULL;
        if (!r->slots[i].raw || (wire_size && !r->slots[i].wire)) return -1;
    }
    if (piped) pz_ring_open_pipes(r, raw_size);
    return 0;
}

static void pz_ring_free(pz_ring *r) {
    pz_ring_close_pipes(r);
    for (int i = 0; i < r->nslots; i++) {
        free(r->slots[i].raw);
        free(r->slots[i].wire);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static int pz_is_pipe(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

/* Waits until slot `seq` is in `state` (or the pipeline stopped); returns the slot or NULL. */
static pz_slot *pz_ring_wait(pz_ring *r, uint64_t seq, int state) {
    pz_slot *s = &r->slots[seq % (uint64_t)r->nslots];
    pthread_mutex_lock(&r->mu);
    while (!r->stop && s->state != state) pthread_cond_wait(&r->cv, &r->mu);
    int stopped = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stopped ? NULL : s;
}

static void pz_ring_set(pz_ring *r, pz_slot *s, int state) {
    pthread_mutex_lock(&r->mu);
    s->state = state;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* A worker claims the next sequence number in order; returns UINT64_MAX when done. */
static uint64_t pz_ring_claim(pz_ring *r) {
    pthread_mutex_lock(&r->mu);
    uint64_t seq = UINT64_MAX;
    for (;;) {
        if (r->stop || r->next_work >= r->end_seq) break;
        pz_slot *s = &r->slots[r->next_work % (uint64_t)r->nslots];
        if (s->state == SLOT_FILLED) {
            s->state = SLOT_WORKING;
            seq = r->next_work++;
            break;
        }
        pthread_cond_wait(&r->cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return seq;
}

/* Whether the workers have handed on every frame before `seq` (they claim in order). Once true
 * it stays true until frame `seq` is passed on, since the workers wait for it. */
static int pz_ring_caught_up(pz_ring *r, uint64_t seq) {
    pthread_mutex_lock(&r->mu);
    int caught_up = r->next_work == seq;
    pthread_mutex_unlock(&r->mu);
    return caught_up;
}

/* Hands a filled frame on: straight to the writer when it needs no worker (`direct`: codec
 * none, or a frame that travels as it is) and no earlier frame still waits for one, else to the
 * workers. Under software emulation every hand-off between threads costs futex wake-ups and
 * context switches worth more than hashing a frame, so frames skip the stage they do not need. */
static void pz_ring_pass(pz_ring *r, pz_slot *s, uint64_t seq, int direct) {
    pthread_mutex_lock(&r->mu);
    if (direct && r->next_work == seq) {
        r->next_work++;
        s->state = SLOT_READY;
    } else {
        s->state = SLOT_FILLED;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void pz_ring_mark_end(pz_ring *r, uint64_t seq) {
    pthread_mutex_lock(&r->mu);
    r->end_seq = seq;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int pz_socket_error_kind(int e) {
    return (e == EAGAIN || e == EWOULDBLOCK) ? PZ_E_TIMEOUT : PZ_E_CONNECTION;
}

/* ------------------------------------------------------------------------------------------ */
/* Token bucket: the bandwidth limit, applied to wire bytes by the sender's writer.           */

typedef struct {
    double rate;    /* bytes per second; 0 means unlimited */
    double tokens;
    double burst;
    double last;
} pz_bucket;

static double pz_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pz_bucket_take(pz_bucket *b, double n, volatile int *stop) {
    if (b->rate <= 0) return;
    for (;;) {
        double now = pz_now();
        b->tokens += (now - b->last) * b->rate;
        b->last = now;
        if (b->tokens > b->burst) b->tokens = b->burst;
        if (b->tokens >= n || *stop) {
            b->tokens -= n;
            return;
        }
        double wait = (n - b->tokens) / b->rate;
        if (wait > 0.05) wait = 0.05;
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Raw frames between pipes, by splice(2) and tee(2)                                          */

static ssize_t pz_read_full(int fd, unsigned char *buf, size_t want) {
    size_t got = 0;
    while (got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Waits until `fd` has `events`. Gives up after `timeout_ms` (-1: never) with errno EAGAIN, or
 * when `wake_fd` (-1: none) becomes readable, with errno ECANCELED. */
static int pz_wait_fd(int fd, short events, int wake_fd, int timeout_ms) {
    for (;;) {
        struct pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
        int ready = poll(fds, wake_fd >= 0 ? 2 : 1, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (ready == 0) {
            errno = EAGAIN;
            return -1;
        }
        if (wake_fd >= 0 && fds[1].revents) {
            errno = ECANCELED;
            return -1;
        }
        return 0;
    }
}

/* Splices up to `want` bytes from `from` into a slot pipe, waiting for `from` as pz_wait_fd
 * does (so a blocking socket's receive timeout and the receiver's wake pipe still apply).
 * Returns the bytes moved: fewer than `want` when `from` ended, or when the slot pipe ran out of
 * room (`*full`); -1 with errno on failure. */
static ssize_t pz_splice_fill(int from, int pipe_wr, size_t want, int wake_fd, int idle_ms,
                              int *full) {
    size_t got = 0;
    *full = 0;
    while (got < want) {
        if (pz_wait_fd(from, POLLIN, wake_fd, idle_ms) != 0) return -1;
        ssize_t n = splice(from, NULL, pipe_wr, NULL, want - got,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0) break;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return -1;
        struct pollfd room = {pipe_wr, POLLOUT, 0};
        if (poll(&room, 1, 0) == 0) {
            *full = 1;
            break;
        }
    }
    return (ssize_t)got;
}

/* Reads the `len` bytes a slot pipe holds into the slot's memory and leaves them in the pipe:
 * tee(2) into the ring's check pipe (as large as a slot pipe, and empty), then read that. */
static int pz_pipe_peek(pz_ring *r, pz_slot *slot, size_t len) {
    ssize_t n = tee(slot->pipe_rd, r->check_wr, len, SPLICE_F_NONBLOCK);
    if (n < 0) return -1;
    if (pz_read_full(r->check_rd, slot->raw, (size_t)n) != n) return -1;
    if ((size_t)n != len) {
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

/* Takes a slot pipe's `len` bytes out into the slot's memory: the frame goes on as one that was
 * never in a pipe. */
static int pz_pipe_unload(pz_slot *slot, size_t len) {
    slot->in_pipe = 0;
    return pz_read_full(slot->pipe_rd, slot->raw, len) == (ssize_t)len ? 0 : -1;
}

/* Fills a slot with `want` bytes from `from` through its pipe: the bytes end up both in the pipe
 * (`in_pipe`) and in memory, or, if they did not fit the pipe, in memory only, the rest read by
 * `read_rest`. Returns the bytes filled, fewer than `want` only where `from` ended. */
static ssize_t pz_slot_fill(pz_ring *r, pz_slot *slot, int from, size_t want, int wake_fd,
                            int idle_ms, ssize_t (*read_rest)(void *, unsigned char *, size_t),
                            void *ctx) {
    int full;
    ssize_t n = pz_splice_fill(from, slot->pipe_wr, want, wake_fd, idle_ms, &full);
    if (n < 0) return -1;
    slot->in_pipe = n > 0;
    if (full) {
        if (pz_pipe_unload(slot, (size_t)n) != 0) return -1;
        ssize_t rest = read_rest(ctx, slot->raw + n, want - (size_t)n);
        return rest < 0 ? -1 : n + rest;
    }
    if (n > 0 && pz_pipe_peek(r, slot, (size_t)n) != 0 &&
        pz_pipe_unload(slot, (size_t)n) != 0)
        return -1;
    return n;
}

/* Moves `len` bytes from a slot pipe to `to` (a socket, a pipe or /dev/null). */
static int pz_splice_out(int pipe_rd, int to, size_t len) {
    while (len > 0) {
        ssize_t n = splice(pipe_rd, NULL, to, NULL, len, SPLICE_F_MOVE);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EPIPE;
            return -1;
        }
        len -= (size_t)n;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Sender                                                                                     */

typedef struct {
    /* configuration, fixed for the life of the stream */
    uint32_t frame_size;
    int codec;
    int level;
    int workers;
    double bwlimit;
    /* the frame checksums of the stream so far, from offset 0: the whole-stream checksum is
     * xxh3-64 over them, and a resume truncates them to the receiver's commit point */
    uint64_t *sums;
    size_t nsums;
    size_t capsums;
    /* counters, read by Python while a run is in progress */
    volatile uint64_t raw_bytes;     /* bytes of the stream sent so far (absolute offset) */
    volatile uint64_t wire_bytes;    /* bytes put on the wire, headers included, all runs */
    volatile uint64_t frames_zstd;   /* frames sent compressed, all runs */
    volatile uint64_t frames_raw;    /* frames sent raw, all runs */
    volatile uint64_t frames_spliced; /* raw frames that went from a pipe by splice, all runs */
    volatile int stop_request;
    /* per run */
    int src_fd;
    int sock_fd;
    uint64_t start_offset;
    uint64_t limit;                  /* stop after this many bytes of the source; UINT64_MAX: EOF */
    pz_sealer sealer;                /* this connection's sender-to-receiver key */
    pz_ring ring;
    pz_bucket bucket;
    ZSTD_CCtx *cctx[PZ_MAX_WORKERS];
    /* codec auto's measurements (guarded by ring.mu), kept across runs; 0 means unknown */
    double link_rate;    /* wire bytes per second the socket (and bandwidth limit) take */
    double zstd_speed;   /* raw bytes per second one worker compresses, wall clock */
    int run_workers;     /* per run: compression threads started; none when every frame goes
                          * raw (codec none, or codec auto to a loopback peer) */
} pz_sender;

static int pz_sender_init(pz_sender *s, uint32_t frame_size, int codec, int level, int workers,
                          double bwlimit) {
    memset(s, 0, sizeof *s);
    if (frame_size == 0 || frame_size > PZ_MAX_FRAME) return -1;
    if (workers < 1) workers = 1;
    if (workers > PZ_MAX_WORKERS) workers = PZ_MAX_WORKERS;
    s->frame_size = frame_size;
    s->codec = codec;
    s->level = level;
    s->workers = codec == PZ_CODEC_NONE ? 0 : workers;
    s->bwlimit = bwlimit;
    /* a bandwidth limit is a link whose rate is known before the first frame: codec auto need
     * not send raw until it has measured one, and measuring needs a socket that backs up,
     * which a token bucket in front of a fast link rarely lets happen */
    s->link_rate = bwlimit > 0 ? bwlimit : 0;
    for (int i = 0; i < s->workers; i++) {
        s->cctx[i] = ZSTD_createCCtx();
        if (!s->cctx[i]) return -1;
        ZSTD_CCtx_setParameter(s->cctx[i], ZSTD_c_compressionLevel, level);
    }
    return 0;
}

static void pz_sender_free(pz_sender *s) {
    for (int i = 0; i < PZ_MAX_WORKERS; i++) ZSTD_freeCCtx(s->cctx[i]);
    free(s->sums);
    s->sums = NULL;
}

static int pz_sums_push(uint64_t **sums, size_t *n, size_t *cap, uint64_t v) {
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        uint64_t *p = realloc(*sums, ncap * sizeof *p);
        if (!p) return -1;
        *sums = p;
        *cap = ncap;
    }
    (*sums)[(*n)++] = v;
    return 0;
}

/* xxh3-64 over the frame checksums as little-endian u64s (this machine is little-endian; the
 * build refuses big-endian targets below). */
static uint64_t pz_chain(const uint64_t *sums, size_t n) {
    return XXH3_64bits(sums, n * sizeof *sums);
}

static int pz_auto_skips(pz_sender *s, uint64_t seq);
static void pz_auto_await_link(pz_sender *s, uint64_t seq);

static ssize_t pz_source_read(void *ctx, unsigned char *buf, size_t want) {
    return pz_read_full(((pz_sender *)ctx)->src_fd, buf, want);
}

static void *pz_send_reader(void *arg) {
    pz_sender *s = arg;
    pthread_setname_np(pthread_self(), "pz-send-read");
    pz_ring *r = &s->ring;
    uint64_t offset = s->start_offset;
    uint64_t remaining = s->limit;
    for (uint64_t seq = 0;; seq++) {
        pz_slot *slot = pz_ring_wait(r, seq, SLOT_FREE);
        if (!slot) return NULL;
        size_t want = s->frame_size;
        if (remaining < want) want = (size_t)remaining;
        slot->in_pipe = 0;
        ssize_t n = 0;
        if (want && r->piped)
            n = pz_slot_fill(r, slot, s->src_fd, want, -1, -1, pz_source_read, s);
        else if (want)
            n = pz_read_full(s->src_fd, slot->raw, want);
        if (n < 0) {
            pz_ring_fail(r, PZ_E_SOURCE, errno, "reading the source at offset %llu: %s",
                         (unsigned long long)offset, strerror(errno));
            return NULL;
        }
        if (n == 0) {
            pz_ring_mark_end(r, seq);
            return NULL;
        }
        slot->raw_len = (uint32_t)n;
        slot->offset = offset;
        slot->checksum = pz_frame_checksum(slot->raw, (size_t)n, offset);
        slot->flags = 0;
        slot->wire_len = (uint32_t)n;
        offset += (uint64_t)n;
        if (remaining != UINT64_MAX) remaining -= (uint64_t)n;
        if (s->run_workers && s->codec == PZ_CODEC_AUTO) pz_auto_await_link(s, seq);
        int raw = !s->run_workers || (s->codec == PZ_CODEC_AUTO && pz_auto_skips(s, seq));
        pz_ring_pass(r, slot, seq, raw);
        if ((size_t)n < s->frame_size) { /* a short frame is always the last one */
            pz_ring_mark_end(r, seq + 1);
            return NULL;
        }
    }
}

/* codec auto: compress a frame when that moves more stream bytes per second than sending it
 * raw. Sending raw moves `link_rate`; compressing moves min(compression capacity,
 * link_rate / ratio), where the capacity is the workers times the speed one of them reaches on
 * the wall clock (so cores shared with the reader, the writer, the kernel's TCP work or the peer
 * are already accounted for). The link rate is measured only over windows in which
 * the writer never waited for a frame and data stayed queued in the socket (the link was the
 * bottleneck), counting what left the send queue rather than what entered it: megabytes of
 * socket buffer would otherwise pass for a fast link each time they have room, and a link
 * shaped further down the path would look as fast as the first hop. While it is unknown the
 * link keeps up with whatever we produce, and frames go raw. The frame's ratio comes from
 * compressing a 32 KiB sample of it (about 3 % of the work), so the choice follows the data
 * frame by frame. Compression speed is measured on the wall clock, not in CPU time, so that a
 * machine whose cores are busy with other work (or with the peer, on loopback) counts as the
 * slower compressor it is. A clear gain (50 %) is required, since a wrong guess costs CPU that
 * the peer or the rest of the machine may need. */
#define PZ_AUTO_SAMPLE (32u << 10)
#define PZ_AUTO_GAIN 1.5
#define PZ_AUTO_RESAMPLE_BYTES (16u << 20)
#define PZ_EWMA 0.2
#define PZ_LINK_WINDOW 8                 /* frames, */
#define PZ_LINK_WINDOW_BYTES (8u << 20) /* or wire bytes, whichever comes first */

/* ratio 0 asks about the best case, a frame that compresses to nothing */
static int pz_auto_pays(pz_sender *s, double ratio) {
    pz_ring *r = &s->ring;
    pthread_mutex_lock(&r->mu);
    double link = s->link_rate, speed = s->zstd_speed;
    pthread_mutex_unlock(&r->mu);
    /* the link is measured only while it is saturated: until then it is not the bottleneck */
    if (link <= 0) return 0;
    if (speed <= 0) return 1;
    double with_zstd = speed * s->workers;
    if (ratio > 0 && link / ratio < with_zstd) with_zstd = link / ratio;
    return with_zstd > PZ_AUTO_GAIN * link;
}

/* Bytes written to the socket that the peer has not acknowledged yet; 0 if unknown. */
static double pz_unsent(int fd) {
    int queued = 0;
    return ioctl(fd, SIOCOUTQ, &queued) == 0 && queued > 0 ? (double)queued : 0;
}

static double pz_ewma(double old, double sample) {
    return old <= 0 ? sample : old + PZ_EWMA * (sample - old);
}

/* Whether the socket's peer is a loopback address (v4, v6, or v4 mapped into v6). */
static int pz_peer_is_loopback(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family != AF_INET6) return 0;
    const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* Codec auto sends every frame raw to a peer on this machine, unless a bandwidth limit makes
 * the connection a slow link: there is no wire to save, and the compressors would take their
 * CPU from the receiver on the same cores. Measuring cannot tell this case apart: the "link"
 * measured is the receiver's speed, which falls as soon as compression competes with it. */
static int pz_auto_raw_only(const pz_sender *s, int sock_fd) {
    return s->codec == PZ_CODEC_AUTO && s->bwlimit <= 0 && pz_peer_is_loopback(sock_fd);
}

/* Whether frame `seq` goes raw without a sample: while the link is unknown, and while even a
 * perfect ratio could not pay (a link faster than the compressors), except one frame in every
 * PZ_AUTO_RESAMPLE_BYTES of stream, which keeps the speed current. That period is counted in
 * bytes, not frames, so that with large frames a compression speed measured low once (a worker
 * preempted during its sample) does not keep a slow link on raw frames for long. The reader asks
 * first, so that such frames skip the workers. */
static int pz_auto_skips(pz_sender *s, uint64_t seq) {
    pthread_mutex_lock(&s->ring.mu);
    int link_known = s->link_rate > 0;
    pthread_mutex_unlock(&s->ring.mu);
    uint64_t every = PZ_AUTO_RESAMPLE_BYTES / s->frame_size;
    if (every == 0) every = 1;
    return !link_known || (!pz_auto_pays(s, 0) && seq % every != 0);
}

/* The stream's first frames go raw until the link is measured, and the reader runs a ring
 * ahead of the writer: deciding them all at once would send a ring of frames raw on a slow link
 * (eight 4 MiB frames, a fifth of a second at 100 MB/s). So the frames of the second link window
 * wait, before their decision, until the first window has measured the link, or until the writer
 * has nothing else to send (a link that is not saturated is never measured, and then the wait
 * ends as soon as it would cost anything). Later frames never wait. */
static void pz_auto_await_link(pz_sender *s, uint64_t seq) {
    uint64_t window = (PZ_LINK_WINDOW_BYTES + s->frame_size - 1) / s->frame_size;
    if (window > PZ_LINK_WINDOW) window = PZ_LINK_WINDOW;
    if (seq < window || seq >= 2 * window) return;
    pz_ring *r = &s->ring;
    pthread_mutex_lock(&r->mu);
    while (!r->stop && s->link_rate <= 0 && r->written < seq) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

/* Compresses a sample of the frame (into its wire buffer, overwritten later) to learn its
 * ratio and the compression speed, then asks whether compressing it pays. */
static int pz_auto_wants_zstd(pz_sender *s, ZSTD_CCtx *cctx, pz_slot *slot, size_t bound,
                              uint64_t seq) {
    if (pz_auto_skips(s, seq)) return 0;
    size_t sample = slot->raw_len < PZ_AUTO_SAMPLE ? slot->raw_len : PZ_AUTO_SAMPLE;
    double took = pz_now();
    size_t c = ZSTD_compress2(cctx, slot->wire, bound, slot->raw, sample);
    took = pz_now() - took;
    if (ZSTD_isError(c)) return 1; /* the full compression will report it */
    pz_ring *r = &s->ring;
    pthread_mutex_lock(&r->mu);
    if (took > 0) s->zstd_speed = pz_ewma(s->zstd_speed, sample / took);
    pthread_mutex_unlock(&r->mu);
    return pz_auto_pays(s, (double)c / sample);
}

typedef struct {
    void *owner; /* the pz_sender or pz_receiver */
    int index;
} pz_worker_arg;

static void *pz_send_worker(void *arg) {
    pz_worker_arg *wa = arg;
    pz_sender *s = wa->owner;
    pz_ring *r = &s->ring;
    ZSTD_CCtx *cctx = s->cctx[wa->index];
    pthread_setname_np(pthread_self(), "pz-send-zstd");
    size_t bound = ZSTD_compressBound(s->frame_size);
    for (;;) {
        uint64_t seq = pz_ring_claim(r);
        if (seq == UINT64_MAX) return NULL;
        pz_slot *slot = &r->slots[seq % (uint64_t)r->nslots];
        int compress = s->codec == PZ_CODEC_ZSTD || pz_auto_wants_zstd(s, cctx, slot, bound, seq);
        if (compress) {
            double took = pz_now();
            size_t c = ZSTD_compress2(cctx, slot->wire, bound, slot->raw, slot->raw_len);
            if (ZSTD_isError(c)) {
                pz_ring_fail(r, PZ_E_CODEC, 0, "zstd compression failed: %s",
                             ZSTD_getErrorName(c));
                return NULL;
            }
            took = pz_now() - took;
            pthread_mutex_lock(&r->mu);
            if (took > 0) s->zstd_speed = pz_ewma(s->zstd_speed, slot->raw_len / took);
            pthread_mutex_unlock(&r->mu);
            /* frames that do not shrink by at least 1/32 travel raw */
            if (c < slot->raw_len - slot->raw_len / 32) {
                slot->flags = PZ_FLAG_ZSTD;
                slot->wire_len = (uint32_t)c;
            }
        }
        pz_ring_set(r, slot, SLOT_READY);
    }
}

/* Writes every byte of `iov`. `flags` (MSG_MORE) apply where `fd` is a socket; the data path
 * also writes to other descriptors (/dev/null in the CPU probe and the micro-benchmarks). */
static int pz_send_all(int fd, struct iovec *iov, int iovcnt, int flags) {
    while (iovcnt > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = flags ? sendmsg(fd, &msg, flags) : writev(fd, iov, iovcnt);
        if (n < 0 && errno == ENOTSOCK && flags) {
            flags = 0;
            continue;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Puts a frame on the wire: a raw frame held in its slot pipe is spliced behind its header
 * (MSG_MORE keeps the two in the same segments); any other goes from memory, and a compressed
 * frame's copy in the slot pipe is dropped. */
static int pz_send_frame(pz_sender *s, pz_slot *slot, struct iovec iov[2]) {
    if (!slot->in_pipe) return pz_send_all(s->sock_fd, iov, 2, 0);
    if (slot->flags & PZ_FLAG_ZSTD)
        return pz_send_all(s->sock_fd, iov, 2, 0) != 0 ? -1
               : pz_splice_out(slot->pipe_rd, s->ring.discard_fd, slot->raw_len);
    if (pz_send_all(s->sock_fd, iov, 1, MSG_MORE) != 0 ||
        pz_splice_out(slot->pipe_rd, s->sock_fd, slot->raw_len) != 0)
        return -1;
    s->frames_spliced++;
    return 0;
}

/* The writer stage, on the calling thread: frames go out in order, then the end frame. */
static void pz_send_writer(pz_sender *s) {
    pz_ring *r = &s->ring;
    unsigned char hdr[PZ_HEADER_SIZE + PZ_END_PAYLOAD];
    /* link speed, measured over windows of frames written back to back (codec auto); large
     * frames close a window after fewer of them, so that they do not delay the first
     * measurement (until it, frames go raw) */
    double window_start = pz_now(), window_bytes = 0, window_unsent = pz_unsent(s->sock_fd);
    int window_frames = 0;
    for (uint64_t seq = 0;; seq++) {
        pz_slot *slot;
        int waited = 0;
        pthread_mutex_lock(&r->mu);
        for (;;) {
            slot = &r->slots[seq % (uint64_t)r->nslots];
            if (r->stop || seq >= r->end_seq || slot->state == SLOT_READY) break;
            waited = 1;
            pthread_cond_wait(&r->cv, &r->mu);
        }
        int stopped = r->stop, at_end = seq >= r->end_seq;
        pthread_mutex_unlock(&r->mu);
        if (stopped) return;
        if (s->stop_request) {
            pz_ring_fail(r, PZ_E_STOPPED, 0, "stopped on request");
            return;
        }
        if (at_end) break;
        unsigned char *payload = (slot->flags & PZ_FLAG_ZSTD) ? slot->wire : slot->raw;
        pz_header h = {PZ_MAGIC, slot->flags, 0, slot->wire_len, slot->raw_len, slot->offset,
                       s->sealer.encrypt ? 0 : slot->checksum, {0}};
        pz_header_pack(&h, hdr);
        /* a frame in its slot pipe has its copy in memory too (the tee read for its checksum),
         * and the pipe is never used when the session encrypts */
        if (pz_seal(&s->sealer, hdr, payload, slot->wire_len, PZ_NONCE_DATA, slot->offset) != 0) {
            pz_ring_fail(r, PZ_E_RESOURCE, 0, "cannot seal the frame at offset %llu",
                         (unsigned long long)slot->offset);
            return;
        }
        struct iovec iov[2] = {{hdr, PZ_HEADER_SIZE}, {payload, slot->wire_len}};
        if (waited) { /* the writer was idle: the link is not saturated, the window is void */
            window_bytes = 0;
            window_frames = 0;
            window_start = pz_now();
            window_unsent = pz_unsent(s->sock_fd);
        }
        pz_bucket_take(&s->bucket, (double)(PZ_HEADER_SIZE + slot->wire_len),
                       &s->stop_request);
        if (pz_send_frame(s, slot, iov) != 0) {
            int e = errno;
            pz_ring_fail(r, pz_socket_error_kind(e), e, "sending frame at offset %llu: %s",
                         (unsigned long long)slot->offset, strerror(e));
            return;
        }
        window_bytes += PZ_HEADER_SIZE + slot->wire_len;
        if (++window_frames == PZ_LINK_WINDOW || window_bytes >= PZ_LINK_WINDOW_BYTES) {
            double now = pz_now(), unsent = pz_unsent(s->sock_fd);
            double carried = window_bytes - (unsent - window_unsent);
            if (now > window_start && unsent > 0 && carried > 0) {
                pthread_mutex_lock(&r->mu);
                s->link_rate = pz_ewma(s->link_rate, carried / (now - window_start));
                pthread_mutex_unlock(&r->mu);
            }
            window_bytes = 0;
            window_frames = 0;
            window_start = now;
            window_unsent = unsent;
        }
        if (pz_sums_push(&s->sums, &s->nsums, &s->capsums, slot->checksum) != 0) {
            pz_ring_fail(r, PZ_E_RESOURCE, ENOMEM, "out of memory for frame checksums");
            return;
        }
        s->raw_bytes = slot->offset + slot->raw_len;
        s->wire_bytes += PZ_HEADER_SIZE + slot->wire_len;
        if (slot->flags & PZ_FLAG_ZSTD) s->frames_zstd++;
        else s->frames_raw++;
        pthread_mutex_lock(&r->mu);
        slot->state = SLOT_FREE;
        r->written = seq + 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    /* a source that failed after its last byte stops us here, before the end frame could
     * vouch for a truncated stream */
    if (s->stop_request) {
        pz_ring_fail(r, PZ_E_STOPPED, 0, "stopped on request before the end frame");
        return;
    }
    /* end frame: total stream length and the whole-stream checksum */
    unsigned char *p = hdr + PZ_HEADER_SIZE;
    pz_put64(p, s->raw_bytes);
    pz_put64(p + 8, pz_chain(s->sums, s->nsums));
    pz_header h = {PZ_MAGIC, PZ_FLAG_END, 0, PZ_END_PAYLOAD, PZ_END_PAYLOAD, s->raw_bytes,
                   s->sealer.encrypt ? 0 : pz_frame_checksum(p, PZ_END_PAYLOAD, s->raw_bytes),
                   {0}};
    pz_header_pack(&h, hdr);
    if (pz_seal(&s->sealer, hdr, p, PZ_END_PAYLOAD, PZ_NONCE_END, s->raw_bytes) != 0) {
        pz_ring_fail(r, PZ_E_RESOURCE, 0, "cannot seal the end frame");
        return;
    }
    struct iovec iov[1] = {{hdr, sizeof hdr}};
    if (pz_send_all(s->sock_fd, iov, 1, 0) != 0) {
        int e = errno;
        pz_ring_fail(r, pz_socket_error_kind(e), e, "sending the end frame: %s", strerror(e));
        return;
    }
    s->wire_bytes += sizeof hdr;
}

/* Hashes the frames of [known, offset) from a seekable source, for a stream that resumes past
 * what this sender sent itself (an earlier receiver process committed them). */
static int pz_sender_adopt(pz_sender *s, int fd, uint64_t offset) {
    unsigned char *buf = malloc(s->frame_size);
    if (!buf) return -1;
    uint64_t at = (uint64_t)s->nsums * s->frame_size;
    while (at < offset) {
        size_t want = s->frame_size;
        if (offset - at < want) want = (size_t)(offset - at);
        ssize_t n = pread(fd, buf, want, (off_t)at);
        if (n != (ssize_t)want) {
            if (n >= 0) errno = EIO;
            free(buf);
            return -1;
        }
        if (pz_sums_push(&s->sums, &s->nsums, &s->capsums,
                         pz_frame_checksum(buf, want, at)) != 0) {
            free(buf);
            errno = ENOMEM;
            return -1;
        }
        at += want;
    }
    free(buf);
    return 0;
}

/* One connection's worth of sending: frames from `start_offset` (a frame boundary the receiver
 * committed) until EOF or `limit` bytes. Returns an error kind; message in s->ring.errmsg. */
static int pz_send_run(pz_sender *s, int src_fd, int sock_fd, uint64_t start_offset,
                       uint64_t limit, const unsigned char *key, int encrypt) {
    s->src_fd = src_fd;
    s->sock_fd = sock_fd;
    s->stop_request = 0;
    s->start_offset = start_offset;
    s->limit = limit;
    s->raw_bytes = start_offset;
    s->run_workers = pz_auto_raw_only(s, sock_fd) ? 0 : s->workers;
    /* the frames before the commit point: whole ones, and a short last one when the receiver
     * committed everything but the end frame (a commit point is always a frame boundary) */
    size_t keep = (size_t)((start_offset + s->frame_size - 1) / s->frame_size);
    if (keep < s->nsums) s->nsums = keep;
    s->bucket.rate = s->bwlimit;
    s->bucket.burst = s->bwlimit > 0 ? (double)(s->frame_size + PZ_HEADER_SIZE) * 2 : 0;
    s->bucket.tokens = s->bucket.burst;
    s->bucket.last = pz_now();
    pz_ring *r = &s->ring;
    size_t wire_size = s->run_workers ? ZSTD_compressBound(s->frame_size) : 0;
    /* an encrypted frame is rewritten in memory, so it cannot go out of its slot pipe */
    int piped = pz_is_pipe(src_fd) && !encrypt;
    if (pz_ring_init(r, s->run_workers + 4, s->frame_size, wire_size, piped) != 0 ||
        pz_sealer_init(&s->sealer, key, encrypt, 1) != 0) {
        pz_ring_free(r);
        pz_sealer_free(&s->sealer);
        snprintf(r->errmsg, sizeof r->errmsg, "out of memory for frame buffers or the cipher");
        return PZ_E_RESOURCE;
    }
    pthread_t reader, workers[PZ_MAX_WORKERS];
    pz_worker_arg wargs[PZ_MAX_WORKERS];
    int nworkers = 0, have_reader = 0;
    if (pthread_create(&reader, NULL, pz_send_reader, s) != 0) {
        pz_ring_fail(r, PZ_E_RESOURCE, errno, "cannot start the reader thread");
    } else {
        have_reader = 1;
    }
    for (int i = 0; i < s->run_workers && !r->err; i++) {
        wargs[i].owner = s;
        wargs[i].index = i;
        if (pthread_create(&workers[i], NULL, pz_send_worker, &wargs[i]) != 0) {
            pz_ring_fail(r, PZ_E_RESOURCE, errno, "cannot start a compression thread");
            break;
        }
        nworkers++;
    }
    if (!r->err) pz_send_writer(s);
    pz_ring_fail(r, PZ_OK, 0, "%s", ""); /* stop every stage; keeps the first error */
    if (have_reader) pthread_join(reader, NULL);
    for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
    int err = r->err;
    pz_ring_free(r);
    pz_sealer_free(&s->sealer);
    return err;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiver                                                                                   */

typedef struct {
    uint32_t frame_size;
    int workers;
    int nslots;
    int allow_zstd;
    /* whole-stream state: survives reconnections, so a resumed stream's checksum still covers
     * every frame from offset 0 */
    XXH3_state_t *chain;
    volatile uint64_t committed;   /* bytes written to the sink, verified (absolute offset) */
    volatile uint64_t wire_bytes;  /* bytes read off the wire, headers included, all runs */
    volatile uint64_t frames;      /* frames written, all runs */
    volatile uint64_t frames_spliced; /* raw frames spliced into a pipe sink, all runs */
    int short_frame_seen;          /* a frame shorter than frame_size must be the last */
    volatile int stop_request;
    /* end of stream, filled by a run that saw the end frame */
    int ended;
    uint64_t end_total;
    uint64_t end_chain;
    uint64_t chain_value;
    /* per run */
    int sock_fd;
    int sink_fd;
    int wake[2];  /* written to end the reader */
    int idle_ms;  /* the socket's SO_RCVTIMEO; -1 for none */
    pz_sealer sealer; /* this connection's sender-to-receiver key, used by the reader alone */
    pz_ring ring;
    ZSTD_DCtx *dctx[PZ_MAX_WORKERS];
} pz_receiver;

static int pz_receiver_init(pz_receiver *rc, uint32_t frame_size, int allow_zstd, int workers) {
    memset(rc, 0, sizeof *rc);
    if (frame_size == 0 || frame_size > PZ_MAX_FRAME) return -1;
    if (workers < 1) workers = 1;
    if (workers > PZ_MAX_WORKERS) workers = PZ_MAX_WORKERS;
    rc->frame_size = frame_size;
    rc->allow_zstd = allow_zstd;
    rc->workers = allow_zstd ? workers : 0;
    rc->nslots = rc->workers + 4;
    rc->chain = XXH3_createState();
    if (!rc->chain) return -1;
    XXH3_64bits_reset(rc->chain);
    for (int i = 0; i < rc->workers; i++) {
        rc->dctx[i] = ZSTD_createDCtx();
        if (!rc->dctx[i]) return -1;
    }
    return 0;
}

static void pz_receiver_free(pz_receiver *rc) {
    for (int i = 0; i < PZ_MAX_WORKERS; i++) ZSTD_freeDCtx(rc->dctx[i]);
    if (rc->chain) XXH3_freeState(rc->chain);
    rc->chain = NULL;
}

/* Rebuilds the whole-stream state from bytes already committed by an earlier receiver (a
 * partial file): frames of frame_size from offset 0. Returns 0, or -1 with errno set. */
static int pz_receiver_adopt(pz_receiver *rc, int fd, uint64_t length) {
    unsigned char *buf = malloc(rc->frame_size);
    if (!buf) return -1;
    uint64_t offset = 0;
    while (offset < length) {
        size_t want = rc->frame_size;
        if (length - offset < want) want = (size_t)(length - offset);
        ssize_t n = pread(fd, buf, want, (off_t)offset);
        if (n != (ssize_t)want) {
            if (n >= 0) errno = EIO;
            free(buf);
            return -1;
        }
        uint64_t sum = pz_frame_checksum(buf, want, offset);
        XXH3_64bits_update(rc->chain, &sum, sizeof sum);
        offset += want;
        if (want < rc->frame_size) rc->short_frame_seen = 1;
        rc->frames++;
    }
    rc->committed = length;
    free(buf);
    return 0;
}

/* Reads exactly `want` bytes. Waits in poll() rather than in a blocking recv(), on the socket
 * and on the run's wake pipe, so that a run stopping for another reason can end the reader
 * without touching the socket: the socket then stays readable for an orderly goodbye (FAILURE,
 * then draining until the sender closes) instead of a reset that could eat the message. The
 * idle timeout is the socket's SO_RCVTIMEO (errno EAGAIN); a wake-up is ECANCELED. */
static int pz_recv_exact(pz_receiver *rc, unsigned char *buf, size_t want) {
    size_t got = 0;
    while (got < want) {
        ssize_t n = recv(rc->sock_fd, buf + got, want - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (pz_wait_fd(rc->sock_fd, POLLIN, rc->wake[0], rc->idle_ms) != 0) return -1;
    }
    return 0;
}

static ssize_t pz_socket_read(void *ctx, unsigned char *buf, size_t want) {
    return pz_recv_exact(ctx, buf, want) == 0 ? (ssize_t)want : -1;
}

/* A frame's payload: into the slot pipe (and, through a tee, memory) when the ring has pipes
 * and the frame is raw, else into memory. */
static int pz_recv_payload(pz_receiver *rc, pz_slot *slot, const pz_header *h) {
    slot->in_pipe = 0;
    if (!rc->ring.piped || (h->flags & (PZ_FLAG_ZSTD | PZ_FLAG_END)))
        return pz_recv_exact(rc, (h->flags & PZ_FLAG_ZSTD) ? slot->wire : slot->raw,
                             h->wire_len);
    ssize_t n = pz_slot_fill(&rc->ring, slot, rc->sock_fd, h->wire_len, rc->wake[0],
                             rc->idle_ms, pz_socket_read, rc);
    if (n >= 0 && (size_t)n < h->wire_len) errno = ECONNRESET;
    return n == (ssize_t)h->wire_len ? 0 : -1;
}

/* Computes a decoded frame's checksum, which the whole-stream checksum is made of, and says
 * whether it differs from the one the frame carried. An encrypted session carries none (a
 * keyless hash would tell an observer which frames hold what), and its tag vouched for the
 * bytes already. */
static int pz_recv_check(pz_receiver *rc, pz_slot *slot) {
    uint64_t sum = pz_frame_checksum(slot->raw, slot->raw_len, slot->offset);
    if (!rc->sealer.encrypt) return sum != slot->checksum;
    slot->checksum = sum;
    return 0;
}

static void *pz_recv_reader(void *arg) {
    pz_receiver *rc = arg;
    pthread_setname_np(pthread_self(), "pz-recv-read");
    pz_ring *r = &rc->ring;
    uint64_t expect = rc->committed;
    int short_seen = rc->short_frame_seen;
    size_t wire_cap = rc->allow_zstd ? ZSTD_compressBound(rc->frame_size) : rc->frame_size;
    unsigned char hb[PZ_HEADER_SIZE];
    for (uint64_t seq = 0;; seq++) {
        pz_slot *slot = pz_ring_wait(r, seq, SLOT_FREE);
        if (!slot) return NULL;
        if (pz_recv_exact(rc, hb, PZ_HEADER_SIZE) != 0) {
            int e = errno;
            pz_ring_fail(r, pz_socket_error_kind(e), e,
                         "connection lost before the frame at offset %llu: %s",
                         (unsigned long long)expect, strerror(e));
            return NULL;
        }
        pz_header h;
        pz_header_unpack(hb, &h);
        int is_end = (h.flags & PZ_FLAG_END) != 0;
        /* what must hold before the payload can even be read: a header that fails these was
         * damaged (or forged), and the stream cannot be followed past it */
        const char *why = NULL;
        if (h.magic != PZ_MAGIC) why = "bad magic";
        else if (h.reserved != 0) why = "reserved header bits set";
        else if (h.flags & ~(PZ_FLAG_ZSTD | PZ_FLAG_END)) why = "unexpected flags";
        else if (is_end && (h.flags != PZ_FLAG_END || h.wire_len != PZ_END_PAYLOAD ||
                            h.raw_len != PZ_END_PAYLOAD))
            why = "malformed end frame";
        else if (!is_end && (h.raw_len == 0 || h.raw_len > rc->frame_size))
            why = "frame length out of range";
        else if (!is_end && (h.flags & PZ_FLAG_ZSTD) && !rc->allow_zstd)
            why = "compressed frame but zstd was not negotiated";
        else if (!is_end && (h.flags & PZ_FLAG_ZSTD) && (h.wire_len == 0 || h.wire_len > wire_cap))
            why = "compressed frame length out of range";
        else if (!is_end && !(h.flags & PZ_FLAG_ZSTD) && h.wire_len != h.raw_len)
            why = "raw frame whose wire length differs from its length";
        if (why) {
            pz_ring_fail(r, PZ_E_FRAMING, 0,
                         "frame header damaged: %s (expected offset %llu; header says offset "
                         "%llu, flags 0x%x, length %u)", why, (unsigned long long)expect,
                         (unsigned long long)h.offset, h.flags, h.wire_len);
            return NULL;
        }
        if (pz_recv_payload(rc, slot, &h) != 0) {
            int e = errno;
            pz_ring_fail(r, pz_socket_error_kind(e), e,
                         "connection lost inside the frame at offset %llu: %s",
                         (unsigned long long)h.offset, strerror(e));
            return NULL;
        }
        __atomic_add_fetch(&rc->wire_bytes, PZ_HEADER_SIZE + h.wire_len, __ATOMIC_RELAXED);
        unsigned char *payload = (h.flags & PZ_FLAG_ZSTD) ? slot->wire : slot->raw;
        int authentic = pz_open(&rc->sealer, hb, payload, h.wire_len,
                                is_end ? PZ_NONCE_END : PZ_NONCE_DATA, h.offset);
        if (authentic < 0) {
            pz_ring_fail(r, PZ_E_RESOURCE, 0, "cannot check the tag of the frame at offset %llu",
                         (unsigned long long)h.offset);
            return NULL;
        }
        if (!authentic) { /* the frames before it are good: they are written, then the run ends */
            slot->flags = h.flags;
            slot->raw_len = h.raw_len;
            slot->offset = h.offset;
            slot->bad = PZ_BAD_TAG;
            pz_ring_pass(r, slot, seq, 1);
            pz_ring_mark_end(r, seq + 1);
            return NULL;
        }
        /* an authentic frame elsewhere than expected was replayed, dropped or reordered on the
         * way (or sent wrong): like a damaged one, it ends the connection, not the transfer */
        if (h.offset != expect) {
            pz_ring_fail(r, PZ_E_FRAMING, 0, "frame is not at the expected offset (expected "
                         "%llu, got %llu, flags 0x%x): replayed, dropped or reordered",
                         (unsigned long long)expect, (unsigned long long)h.offset, h.flags);
            return NULL;
        }
        /* an authentic frame that breaks this rule comes from a sender that is wrong */
        if (!is_end && short_seen) {
            pz_ring_fail(r, PZ_E_PROTOCOL, 0, "data after a short frame (offset %llu)",
                         (unsigned long long)h.offset);
            return NULL;
        }
        slot->flags = h.flags;
        slot->wire_len = h.wire_len;
        slot->raw_len = h.raw_len;
        slot->offset = h.offset;
        slot->checksum = h.checksum;
        slot->bad = 0;
        if (is_end) {
            if (!rc->sealer.encrypt &&
                pz_frame_checksum(slot->raw, PZ_END_PAYLOAD, h.offset) != h.checksum) {
                pz_ring_fail(r, PZ_E_CHECKSUM, 0, "end frame checksum mismatch");
                return NULL;
            }
            /* the end frame passes straight to the writer, in order behind the data */
            pz_ring_set(r, slot, SLOT_READY);
            pz_ring_mark_end(r, seq);
            return NULL;
        }
        expect += h.raw_len;
        if (h.raw_len < rc->frame_size) short_seen = 1;
        /* a raw frame is verified here unless an earlier frame still waits for a worker */
        int direct = !(h.flags & PZ_FLAG_ZSTD) && pz_ring_caught_up(r, seq);
        if (direct) slot->bad = pz_recv_check(rc, slot);
        pz_ring_pass(r, slot, seq, direct);
    }
}

static void *pz_recv_worker(void *arg) {
    pz_worker_arg *wa = arg;
    pz_receiver *rc = wa->owner;
    pz_ring *r = &rc->ring;
    ZSTD_DCtx *dctx = rc->dctx[wa->index];
    pthread_setname_np(pthread_self(), "pz-recv-unzstd");
    for (;;) {
        uint64_t seq = pz_ring_claim(r);
        if (seq == UINT64_MAX) return NULL;
        pz_slot *slot = &r->slots[seq % (uint64_t)r->nslots];
        if (!slot->bad && (slot->flags & PZ_FLAG_ZSTD)) {
            size_t n = ZSTD_decompressDCtx(dctx, slot->raw, rc->frame_size, slot->wire,
                                           slot->wire_len);
            if (ZSTD_isError(n) || n != slot->raw_len) slot->bad = PZ_BAD_CHECKSUM;
        }
        if (!slot->bad) slot->bad = pz_recv_check(rc, slot);
        pz_ring_set(r, slot, SLOT_READY);
    }
}

static int pz_write_all(int fd, const unsigned char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void pz_recv_writer(pz_receiver *rc) {
    pz_ring *r = &rc->ring;
    for (uint64_t seq = 0;; seq++) {
        pz_slot *slot = pz_ring_wait(r, seq, SLOT_READY);
        if (!slot) return;
        if (rc->stop_request) {
            pz_ring_fail(r, PZ_E_STOPPED, 0, "stopped on request");
            return;
        }
        if (slot->bad == PZ_BAD_TAG) {
            pz_ring_fail(r, PZ_E_INTEGRITY, 0,
                         "the %s at offset %llu failed its authentication tag (damaged or "
                         "altered on the way); nothing of it was used",
                         (slot->flags & PZ_FLAG_END) ? "end frame" : "frame",
                         (unsigned long long)slot->offset);
            return;
        }
        if (slot->bad) {
            pz_ring_fail(r, PZ_E_CHECKSUM, 0,
                         "frame at offset %llu (%u bytes) failed its checksum; nothing of it "
                         "was written", (unsigned long long)slot->offset, slot->raw_len);
            return;
        }
        if (slot->flags & PZ_FLAG_END) {
            rc->end_total = pz_get64(slot->raw);
            rc->end_chain = pz_get64(slot->raw + 8);
            rc->chain_value = XXH3_64bits_digest(rc->chain);
            rc->ended = 1;
            return;
        }
        int failed = slot->in_pipe
                         ? pz_splice_out(slot->pipe_rd, rc->sink_fd, slot->raw_len)
                         : pz_write_all(rc->sink_fd, slot->raw, slot->raw_len);
        if (failed) {
            int e = errno;
            pz_ring_fail(r, PZ_E_SINK, e, "writing the sink at offset %llu: %s",
                         (unsigned long long)slot->offset, strerror(e));
            return;
        }
        XXH3_64bits_update(rc->chain, &slot->checksum, sizeof slot->checksum);
        rc->committed = slot->offset + slot->raw_len;
        rc->frames++;
        if (slot->in_pipe) rc->frames_spliced++;
        if (slot->raw_len < rc->frame_size) rc->short_frame_seen = 1;
        pz_ring_set(r, slot, SLOT_FREE);
    }
}

/* One connection's worth of receiving, until the end frame or an error. */
static int pz_recv_run(pz_receiver *rc, int sock_fd, int sink_fd, const unsigned char *key,
                       int encrypt) {
    rc->sock_fd = sock_fd;
    rc->sink_fd = sink_fd;
    rc->stop_request = 0;
    rc->ended = 0;
    pz_ring *r = &rc->ring;
    struct timeval tv = {0, 0};
    socklen_t tvlen = sizeof tv;
    getsockopt(sock_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &tvlen);
    rc->idle_ms = tv.tv_sec || tv.tv_usec ? (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000) : -1;
    if (pipe2(rc->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "cannot create a pipe: %s", strerror(errno));
        return PZ_E_RESOURCE;
    }
    size_t wire_size = rc->workers ? ZSTD_compressBound(rc->frame_size) : 0;
    /* the end frame's payload lands in a raw buffer, which must hold it */
    size_t raw_size = rc->frame_size < PZ_END_PAYLOAD ? PZ_END_PAYLOAD : rc->frame_size;
    /* a frame is decrypted in memory, so an encrypted one cannot pass through a slot pipe */
    int piped = pz_is_pipe(sink_fd) && !encrypt;
    if (pz_ring_init(r, rc->nslots, raw_size, wire_size, piped) != 0 ||
        pz_sealer_init(&rc->sealer, key, encrypt, 0) != 0) {
        pz_ring_free(r);
        pz_sealer_free(&rc->sealer);
        close(rc->wake[0]);
        close(rc->wake[1]);
        snprintf(r->errmsg, sizeof r->errmsg, "out of memory for frame buffers or the cipher");
        return PZ_E_RESOURCE;
    }
    pthread_t reader, workers[PZ_MAX_WORKERS];
    pz_worker_arg wargs[PZ_MAX_WORKERS];
    int nworkers = 0, have_reader = 0;
    if (pthread_create(&reader, NULL, pz_recv_reader, rc) != 0)
        pz_ring_fail(r, PZ_E_RESOURCE, errno, "cannot start the reader thread");
    else
        have_reader = 1;
    for (int i = 0; i < rc->workers && !r->err; i++) {
        wargs[i].owner = rc;
        wargs[i].index = i;
        if (pthread_create(&workers[i], NULL, pz_recv_worker, &wargs[i]) != 0) {
            pz_ring_fail(r, PZ_E_RESOURCE, errno, "cannot start a decompression thread");
            break;
        }
        nworkers++;
    }
    if (!r->err) pz_recv_writer(rc);
    pz_ring_fail(r, PZ_OK, 0, "%s", "");
    /* the reader may be waiting for the socket */
    if (write(rc->wake[1], "x", 1) < 0 && errno != EAGAIN)
        pz_ring_fail(r, PZ_E_RESOURCE, errno, "cannot wake the reader");
    if (have_reader) pthread_join(reader, NULL);
    for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
    close(rc->wake[0]);
    close(rc->wake[1]);
    int err = r->err;
    pz_ring_free(r);
    pz_sealer_free(&rc->sealer);
    return err;
}

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the whole-stream checksum hashes frame checksums in host order: little-endian only"
#endif

#endif
