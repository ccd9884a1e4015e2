# cython: language_level=3, boundscheck=False, wraparound=False
"""Moves bytes between file descriptors inside the kernel with splice(2), without the GIL.

Python only sets the transfer up and reads the count; the loop runs in C so that a stream of
gigabytes costs no per-chunk interpreter work.
"""

from libc.errno cimport errno, EINTR, EAGAIN
from posix.unistd cimport close

cdef extern from "<fcntl.h>" nogil:
    ssize_t splice(int fd_in, void *off_in, int fd_out, void *off_out, size_t length,
                   unsigned int flags)
    int fcntl(int fd, int cmd, ...)
    int pipe2(int *fds, int flags)
    int F_SETPIPE_SZ
    int F_GETPIPE_SZ
    int O_CLOEXEC
    unsigned int SPLICE_F_MOVE
    unsigned int SPLICE_F_MORE

cdef extern from "<sys/stat.h>" nogil:
    cdef struct stat:
        unsigned int st_mode
    int fstat(int fd, stat *buf)
    bint S_ISFIFO(unsigned int mode)

import os

DEFAULT_CHUNK = 1 << 20


cdef bint _is_pipe(int fd) nogil:
    cdef stat st
    if fstat(fd, &st) != 0:
        return False
    return S_ISFIFO(st.st_mode)


def is_pipe(int fd) -> bool:
    """Whether ``fd`` is a pipe: splice(2) needs one on at least one side."""
    return _is_pipe(fd)


def set_pipe_size(int fd, int size) -> int:
    """Grows a pipe's buffer; call it while the pipe is still empty (resizing a full pipe can
    deadlock). Returns the size the kernel granted, which may be rounded up to a page multiple."""
    cdef int got = fcntl(fd, F_SETPIPE_SZ, size)
    if got < 0:
        raise OSError(errno, os.strerror(errno), f"F_SETPIPE_SZ {size} on fd {fd}")
    return got


def get_pipe_size(int fd) -> int:
    cdef int got = fcntl(fd, F_GETPIPE_SZ)
    if got < 0:
        raise OSError(errno, os.strerror(errno), f"F_GETPIPE_SZ on fd {fd}")
    return got


cdef long long _splice_loop(int fd_in, int fd_out, long long limit, size_t chunk,
                            int *err) nogil:
    """Splices until EOF on fd_in or ``limit`` bytes (limit < 0: no limit). One side must be a
    pipe. Sets *err to errno on failure and returns the bytes moved so far."""
    cdef long long moved = 0
    cdef ssize_t n
    cdef size_t want
    while limit < 0 or moved < limit:
        want = chunk
        if limit >= 0 and <long long>want > limit - moved:
            want = <size_t>(limit - moved)
        n = splice(fd_in, NULL, fd_out, NULL, want, SPLICE_F_MOVE | SPLICE_F_MORE)
        if n > 0:
            moved += n
        elif n == 0:
            break
        elif errno == EINTR:
            continue
        else:
            err[0] = errno
            break
    return moved


cdef long long _splice_through_pipe(int fd_in, int fd_out, long long limit, size_t chunk,
                                    int rd, int wr, int *err) nogil:
    """Splices fd_in -> pipe -> fd_out for two non-pipe fds (socket to file, file to socket)."""
    cdef long long moved = 0
    cdef ssize_t n, m
    cdef size_t want
    while limit < 0 or moved < limit:
        want = chunk
        if limit >= 0 and <long long>want > limit - moved:
            want = <size_t>(limit - moved)
        n = splice(fd_in, NULL, wr, NULL, want, SPLICE_F_MOVE | SPLICE_F_MORE)
        if n == 0:
            break
        if n < 0:
            if errno == EINTR:
                continue
            err[0] = errno
            break
        while n > 0:
            m = splice(rd, NULL, fd_out, NULL, <size_t>n, SPLICE_F_MOVE | SPLICE_F_MORE)
            if m < 0:
                if errno == EINTR:
                    continue
                err[0] = errno
                return moved
            n -= m
            moved += m
    return moved


def splice_all(int fd_in, int fd_out, long long limit=-1, size_t chunk=DEFAULT_CHUNK) -> int:
    """Moves bytes from ``fd_in`` to ``fd_out`` until EOF (or ``limit`` bytes) and returns the
    count. Releases the GIL for the whole transfer. Raises OSError with the count moved so far in
    its ``moved`` attribute when the kernel reports an error (for example EPIPE from a reader that
    went away)."""
    cdef int err = 0
    cdef long long moved
    cdef int fds[2]
    if _is_pipe(fd_in) or _is_pipe(fd_out):
        with nogil:
            moved = _splice_loop(fd_in, fd_out, limit, chunk, &err)
    else:
        if pipe2(fds, O_CLOEXEC) != 0:
            raise OSError(errno, os.strerror(errno), "pipe2")
        try:
            fcntl(fds[1], F_SETPIPE_SZ, <int>chunk)
            with nogil:
                moved = _splice_through_pipe(fd_in, fd_out, limit, chunk, fds[0], fds[1], &err)
        finally:
            close(fds[0])
            close(fds[1])
    if err:
        exc = OSError(err, os.strerror(err), f"splice fd {fd_in} -> fd {fd_out}")
        exc.moved = moved
        raise exc
    return moved
