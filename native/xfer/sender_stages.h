/* The stages of one sending run: the reader fills frames from the source and hashes them, the
 * workers compress them (codec zstd or auto), the writer seals them and puts them on the wire in
 * order, then the end frame. */
#ifndef PLOYZ_XFER_SENDER_STAGES_H
#define PLOYZ_XFER_SENDER_STAGES_H

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <zstd.h>

#include "bucket.h"
#include "codec_auto.h"
#include "frame.h"
#include "pipeline.h"
#include "ring.h"
#include "sender.h"
#include "splice.h"

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
static void pz_send_writer(void *arg) {
    pz_sender *s = arg;
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
        pz_bucket_take(s->shared_bucket ? s->shared_bucket : &s->bucket,
                       (double)(PZ_HEADER_SIZE + slot->wire_len), &s->stop_request);
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

static const pz_stages pz_send_stages = {
    pz_send_reader, pz_send_worker, pz_send_writer, NULL, "compression thread"};

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
    /* empty at the start: a full bucket let each send put two frames on the wire ahead of the
     * limit, and four concurrent sends sharing one limit carried 1.16x of it */
    s->bucket.tokens = 0;
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
    pz_pipeline_run(r, s, s->run_workers, &pz_send_stages);
    int err = r->err;
    pz_ring_free(r);
    pz_sealer_free(&s->sealer);
    return err;
}

#endif
