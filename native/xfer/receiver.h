/* A receiving stream's state, kept from connection to connection: the commit point, the
 * running whole-stream checksum and the counters. The stages of a run are in receiver_stages.h. */
#ifndef PLOYZ_XFER_RECEIVER_H
#define PLOYZ_XFER_RECEIVER_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "frame.h"
#include "ring.h"

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

#endif
