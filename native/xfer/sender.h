/* A sending stream's state, kept from connection to connection: its configuration, the frame
 * checksums sent so far (for the end frame's whole-stream checksum), its counters and codec
 * auto's measurements. The stages of a run are in sender_stages.h. */
#ifndef PLOYZ_XFER_SENDER_H
#define PLOYZ_XFER_SENDER_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "bucket.h"
#include "frame.h"
#include "ring.h"

enum pz_codec { PZ_CODEC_NONE = 0, PZ_CODEC_ZSTD = 1, PZ_CODEC_AUTO = 2 };

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
    pz_bucket *shared_bucket;        /* the limit shared with other sends, if any (not owned) */
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

#endif
