/* Codec auto's policy: for each frame, whether compressing it moves the stream faster than
 * sending it raw, from the link rate the writer measures and the speed the workers compress at. */
#ifndef PLOYZ_XFER_CODEC_AUTO_H
#define PLOYZ_XFER_CODEC_AUTO_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#include <zstd.h>

#include "sender.h"

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

#endif
