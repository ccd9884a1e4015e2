# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: libraries = zstd xxhash crypto
"""The transfer engine's data path (``ployz._xfer``): one connection's worth of framed sending or
receiving, run in C without the GIL (see xfer_core.h).

Python objects here only configure a stream, start a run and expose counters; errors come back
as ``(kind, errno, message)`` tuples that ``ployz.transfer`` turns into typed exceptions, so this
layer knows nothing of the layers above it.
"""

from libc.stdint cimport uint32_t, uint64_t

cdef extern from "xfer_core.h" nogil:
    enum:
        PZ_MAGIC
        PZ_HEADER_SIZE
        PZ_AAD_SIZE
        PZ_TAG_SIZE
        PZ_KEY_SIZE
        PZ_NONCE_DATA
        PZ_NONCE_END
        PZ_FLAG_ZSTD
        PZ_FLAG_END
        PZ_FLAG_CONTROL
        PZ_END_PAYLOAD
        PZ_MAX_FRAME
        PZ_MAX_WORKERS
        PZ_CODEC_NONE
        PZ_CODEC_ZSTD
        PZ_CODEC_AUTO
        PZ_E_CONNECTION
        PZ_E_TIMEOUT
        PZ_E_PROTOCOL
        PZ_E_CHECKSUM
        PZ_E_SOURCE
        PZ_E_SINK
        PZ_E_CODEC
        PZ_E_RESOURCE
        PZ_E_STOPPED
        PZ_E_INTEGRITY
        PZ_E_FRAMING

    ctypedef struct pz_ring:
        char errmsg[256]
        int err_errno

    ctypedef struct pthread_mutex_t:
        pass

    int pthread_mutex_init(pthread_mutex_t *mu, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mu)

    ctypedef struct pz_bucket:
        double rate
        double tokens
        double burst
        double last
        pthread_mutex_t *mu

    double pz_now()

    ctypedef struct pz_sender:
        pz_bucket *shared_bucket
        double link_rate
        uint64_t raw_bytes
        uint64_t wire_bytes
        uint64_t frames_zstd
        uint64_t frames_raw
        uint64_t frames_spliced
        int stop_request
        uint64_t *sums
        size_t nsums
        uint32_t frame_size
        pz_ring ring

    ctypedef struct pz_receiver:
        uint64_t committed
        uint64_t wire_bytes
        uint64_t frames
        uint64_t frames_spliced
        int stop_request
        int ended
        uint64_t end_total
        uint64_t end_chain
        uint64_t chain_value
        pz_ring ring

    int pz_sender_init(pz_sender *s, uint32_t frame_size, int codec, int level, int workers,
                       double bwlimit)
    void pz_sender_free(pz_sender *s)
    int pz_sender_adopt(pz_sender *s, int fd, uint64_t offset)
    int pz_send_run(pz_sender *s, int src_fd, int sock_fd, uint64_t start_offset,
                    uint64_t limit, const unsigned char *key, int encrypt)
    int pz_receiver_init(pz_receiver *rc, uint32_t frame_size, int allow_zstd, int workers)
    void pz_receiver_free(pz_receiver *rc)
    int pz_receiver_adopt(pz_receiver *rc, int fd, uint64_t length)
    int pz_recv_run(pz_receiver *rc, int sock_fd, int sink_fd, const unsigned char *key,
                    int encrypt)
    uint64_t pz_frame_checksum(const void *data, size_t length, uint64_t offset)
    uint64_t pz_chain(const uint64_t *sums, size_t n)

cdef extern from "<errno.h>":
    int errno

MAGIC = PZ_MAGIC
HEADER_SIZE = PZ_HEADER_SIZE
AAD_SIZE = PZ_AAD_SIZE
TAG_SIZE = PZ_TAG_SIZE
KEY_SIZE = PZ_KEY_SIZE
NONCE_DATA = PZ_NONCE_DATA
NONCE_END = PZ_NONCE_END
FLAG_ZSTD = PZ_FLAG_ZSTD
FLAG_END = PZ_FLAG_END
FLAG_CONTROL = PZ_FLAG_CONTROL
END_PAYLOAD = PZ_END_PAYLOAD
MAX_FRAME = PZ_MAX_FRAME
MAX_WORKERS = PZ_MAX_WORKERS
STOPPED = PZ_E_STOPPED
# The error kinds of a run's ``(kind, errno, message)`` result, by name.
ERROR_KINDS = {
    "connection": PZ_E_CONNECTION, "timeout": PZ_E_TIMEOUT, "protocol": PZ_E_PROTOCOL,
    "checksum": PZ_E_CHECKSUM, "source": PZ_E_SOURCE, "sink": PZ_E_SINK, "codec": PZ_E_CODEC,
    "resource": PZ_E_RESOURCE, "stopped": PZ_E_STOPPED, "integrity": PZ_E_INTEGRITY,
    "framing": PZ_E_FRAMING,
}
CODECS = {"none": PZ_CODEC_NONE, "zstd": PZ_CODEC_ZSTD, "auto": PZ_CODEC_AUTO}
UNLIMITED = 0xFFFFFFFFFFFFFFFF


def frame_checksum(const unsigned char[::1] data, uint64_t offset) -> int:
    """xxh3-64 of ``data`` seeded with its stream offset: the checksum every frame carries."""
    cdef size_t n = data.shape[0]
    cdef const unsigned char *p = &data[0] if n else NULL
    cdef uint64_t sum
    with nogil:
        sum = pz_frame_checksum(p, n, offset)
    return sum


def chain_checksum(const unsigned char[::1] sums) -> int:
    """The whole-stream checksum over frame checksums packed as little-endian u64s, as the end
    frame carries it."""
    if sums.shape[0] % 8:
        raise ValueError("frame checksums are 8 bytes each")
    cdef size_t n = sums.shape[0] // 8
    cdef const unsigned char *p = &sums[0] if n else NULL
    cdef uint64_t value
    with nogil:
        value = pz_chain(<const uint64_t *>p, n)
    return value


cdef const unsigned char *_session_key(bytes key) except NULL:
    if len(key) != PZ_KEY_SIZE:
        raise ValueError(f"a session key is {PZ_KEY_SIZE} bytes, not {len(key)}")
    return key


cdef class RateLimit:
    """A bandwidth limit shared by concurrent senders (the sends of one migration, or of one
    drain): one token bucket behind a mutex, so that together they never exceed ``rate``
    bytes per second and a send that ends leaves its share to the others at once. Senders
    whose frames (with their header) exceed half of ``burst`` cannot use it."""

    cdef pz_bucket b
    cdef pthread_mutex_t mu

    def __cinit__(self, double rate, double burst):
        if not rate > 0 or not burst > 0:
            raise ValueError(f"a shared limit needs a positive rate and burst, not {rate} "
                             f"and {burst}")
        pthread_mutex_init(&self.mu, NULL)
        self.b.rate = rate
        self.b.burst = burst
        self.b.tokens = 0  # empty at the start, as a sender's own bucket
        self.b.last = pz_now()
        self.b.mu = &self.mu

    def __dealloc__(self):
        pthread_mutex_destroy(&self.mu)

    @property
    def rate(self):
        return self.b.rate

    @property
    def burst(self):
        return self.b.burst


cdef class StreamSender:
    """One outgoing stream: it keeps the frame checksums across connections so that the end
    frame's whole-stream checksum covers every frame even after resumes. Its bandwidth limit
    is its own (``bwlimit``) or one shared with other senders (``shared``)."""

    cdef pz_sender s
    cdef bint ready
    cdef RateLimit shared  # kept alive while the writer may take from it

    def __cinit__(self, uint32_t frame_size, str codec, int level=1, int workers=2,
                  double bwlimit=0.0, RateLimit shared=None):
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}")
        if shared is not None and (bwlimit > 0 or
                                   shared.b.burst < 2.0 * (frame_size + PZ_HEADER_SIZE)):
            raise ValueError("a sender with a shared limit has no limit of its own, and its "
                             "frames must fit the shared burst twice")
        if pz_sender_init(&self.s, frame_size, CODECS[codec], level, workers, bwlimit) != 0:
            pz_sender_free(&self.s)
            raise ValueError(f"cannot set up a sender with frame size {frame_size}")
        if shared is not None:
            self.shared = shared
            self.s.shared_bucket = &shared.b
            self.s.link_rate = shared.b.rate  # as a limit of its own, an upper bound
        self.ready = True

    def __dealloc__(self):
        if self.ready:
            pz_sender_free(&self.s)

    def run(self, int src_fd, int sock_fd, uint64_t start_offset, bytes key, bint encrypt=False,
            uint64_t limit=UNLIMITED):
        """Sends frames from ``src_fd`` (positioned at ``start_offset``) until EOF or ``limit``
        bytes, then the end frame, each sealed with this connection's sender ``key`` (and
        encrypted if ``encrypt``). Returns ``(kind, errno, message)``; kind 0 is success."""
        cdef int kind
        cdef const unsigned char *k = _session_key(key)
        with nogil:
            kind = pz_send_run(&self.s, src_fd, sock_fd, start_offset, limit, k, encrypt)
        return kind, self.s.ring.err_errno, self.s.ring.errmsg.decode("utf-8", "replace")

    def adopt(self, int fd, uint64_t offset):
        """Hashes the source's frames up to ``offset`` that this sender has not sent itself
        (the receiver kept them from an earlier run), so that the end frame still covers the
        whole stream. ``fd`` must be seekable; its position does not move."""
        cdef int rc
        with nogil:
            rc = pz_sender_adopt(&self.s, fd, offset)
        if rc != 0:
            raise OSError(errno, "cannot re-read the source prefix")

    @property
    def chain(self):
        """The whole-stream checksum of the frames sent so far, as the end frame carries it."""
        return pz_chain(self.s.sums, self.s.nsums)

    @property
    def known_bytes(self):
        """Bytes of the stream whose frame checksums this sender holds."""
        return self.s.nsums * self.frame_size

    @property
    def frame_size(self):
        return self.s.frame_size

    def restart(self):
        """Forgets the frames sent so far: the next run starts a new stream at offset 0 (a ZFS
        resume restarts the stream from a token)."""
        self.s.nsums = 0
        self.s.raw_bytes = 0

    def stop(self):
        """Asks a run in progress to stop at the next frame (from any thread)."""
        self.s.stop_request = 1

    @property
    def raw_bytes(self):
        return self.s.raw_bytes

    @property
    def wire_bytes(self):
        return self.s.wire_bytes

    @property
    def frames_zstd(self):
        return self.s.frames_zstd

    @property
    def frames_raw(self):
        return self.s.frames_raw

    @property
    def frames_spliced(self):
        """Raw frames that went from the source pipe to the socket by splice(2)."""
        return self.s.frames_spliced


cdef class StreamReceiver:
    """One incoming stream: it keeps the commit point and the running whole-stream checksum
    across connections."""

    cdef pz_receiver rc
    cdef bint ready

    def __cinit__(self, uint32_t frame_size, bint allow_zstd, int workers=2):
        if pz_receiver_init(&self.rc, frame_size, allow_zstd, workers) != 0:
            pz_receiver_free(&self.rc)
            raise ValueError(f"cannot set up a receiver with frame size {frame_size}")
        self.ready = True

    def __dealloc__(self):
        if self.ready:
            pz_receiver_free(&self.rc)

    def adopt(self, int fd, uint64_t length):
        """Takes over ``length`` bytes an earlier receiver committed to ``fd`` (re-hashing them
        to rebuild the whole-stream checksum), so that the stream resumes after them."""
        cdef int rc
        with nogil:
            rc = pz_receiver_adopt(&self.rc, fd, length)
        if rc != 0:
            raise OSError(errno, "cannot re-read the committed prefix")

    def run(self, int sock_fd, int sink_fd, bytes key, bint encrypt=False):
        """Receives frames into ``sink_fd`` until the end frame or an error, each checked with
        this connection's sender ``key`` before any of it is used. Returns
        ``(kind, errno, message)``; kind 0 with ``ended`` set means the end frame arrived."""
        cdef int kind
        cdef const unsigned char *k = _session_key(key)
        with nogil:
            kind = pz_recv_run(&self.rc, sock_fd, sink_fd, k, encrypt)
        return kind, self.rc.ring.err_errno, self.rc.ring.errmsg.decode("utf-8", "replace")

    def stop(self):
        self.rc.stop_request = 1

    @property
    def committed(self):
        return self.rc.committed

    @property
    def wire_bytes(self):
        return self.rc.wire_bytes

    @property
    def frames(self):
        return self.rc.frames

    @property
    def frames_spliced(self):
        """Raw frames that went from the socket to the sink pipe by splice(2)."""
        return self.rc.frames_spliced

    @property
    def ended(self):
        return bool(self.rc.ended)

    @property
    def end_total(self):
        return self.rc.end_total

    @property
    def end_chain(self):
        return self.rc.end_chain

    @property
    def chain_value(self):
        return self.rc.chain_value
