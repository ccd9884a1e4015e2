/* The stages of one receiving run: the reader checks each header, reads the payload and checks
 * its tag before anything else touches it, the workers decompress and verify (codec zstd), the
 * writer writes verified frames to the sink in order and advances the commit point. */
#ifndef PLOYZ_XFER_RECEIVER_STAGES_H
#define PLOYZ_XFER_RECEIVER_STAGES_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <zstd.h>

#include "errors.h"
#include "frame.h"
#include "pipeline.h"
#include "receiver.h"
#include "ring.h"
#include "splice.h"

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

static void pz_recv_writer(void *arg) {
    pz_receiver *rc = arg;
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

/* After the stop: the reader may be waiting for the socket. */
static void pz_recv_wake(void *arg) {
    pz_receiver *rc = arg;
    if (write(rc->wake[1], "x", 1) < 0 && errno != EAGAIN)
        pz_ring_fail(&rc->ring, PZ_E_RESOURCE, errno, "cannot wake the reader");
}

static const pz_stages pz_recv_stages = {
    pz_recv_reader, pz_recv_worker, pz_recv_writer, pz_recv_wake, "decompression thread"};

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
    pz_pipeline_run(r, rc, rc->workers, &pz_recv_stages);
    close(rc->wake[0]);
    close(rc->wake[1]);
    int err = r->err;
    pz_ring_free(r);
    pz_sealer_free(&rc->sealer);
    return err;
}

#endif
