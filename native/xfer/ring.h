/* The ring of frame slots the three stages of a pipeline hand frames around in, in order, and
 * the first error of a run, which stops every stage. */
#ifndef PLOYZ_XFER_RING_H
#define PLOYZ_XFER_RING_H

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"

#define PZ_MAX_SLOTS 32
#define PZ_MAX_WORKERS 8

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

/* The slot pipes (splice.h). */
static void pz_ring_open_pipes(pz_ring *r, size_t frame);
static void pz_ring_close_pipes(pz_ring *r);

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

#endif
