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
 *
 * The parts, one job each, in the order they build on each other (native/xfer/):
 *   frame.h            the wire: constants, header pack/unpack, checksums, the AES-GCM tags
 *   errors.h           the error kinds a run returns
 *   ring.h             frame slots and the ring the stages hand them around in
 *   bucket.h           the token bucket of the bandwidth limit
 *   splice.h           slot pipes; moving a frame through one by splice(2) and tee(2)
 *   pipeline.h         one run: start the reader and the workers, run the writer, stop, join
 *   sender.h           a sending stream's state, kept across connections
 *   codec_auto.h       codec auto's choice, frame by frame, between zstd and raw
 *   sender_stages.h    the sender's reader, workers and writer, and pz_send_run
 *   receiver.h         a receiving stream's state, kept across connections
 *   receiver_stages.h  the receiver's reader, workers and writer, and pz_recv_run
 * All of it is static functions in headers: ployz._xfer is the one translation unit that uses
 * them (native/xfer.pyx includes this header), so nothing is linked or exported besides it.
 */
#ifndef PLOYZ_XFER_CORE_H
#define PLOYZ_XFER_CORE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "xfer/frame.h"
#include "xfer/errors.h"
#include "xfer/ring.h"
#include "xfer/bucket.h"
#include "xfer/splice.h"
#include "xfer/pipeline.h"
#include "xfer/sender.h"
#include "xfer/codec_auto.h"
#include "xfer/sender_stages.h"
#include "xfer/receiver.h"
#include "xfer/receiver_stages.h"

#endif
