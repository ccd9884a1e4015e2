/* How a run fails: the kind of error it returns, which ployz.transfer turns into a typed
 * exception (ployz._xfer.ERROR_KINDS names them). */
#ifndef PLOYZ_XFER_ERRORS_H
#define PLOYZ_XFER_ERRORS_H

#include <errno.h>

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

/* A failed socket call's kind: a receive or send timeout (SO_RCVTIMEO, SO_SNDTIMEO) reports
 * EAGAIN. */
static int pz_socket_error_kind(int e) {
    return (e == EAGAIN || e == EWOULDBLOCK) ? PZ_E_TIMEOUT : PZ_E_CONNECTION;
}

#endif
