"""A bare splice(2) loop, the baseline that moves bytes between descriptors with no framing,
checksums or tags (``bench.transfer.bench_loopback``'s ``splice_unverified``, and draining
``zfs send`` in ``bench.zfs.bench_send``).

A loop of ``os.splice`` in Python: each call moves up to a chunk (1 MiB) inside the kernel with
the GIL released, so the interpreter costs a few microseconds per megabyte, far below the
kernel's own work on it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

CHUNK = 1 << 20


def _is_pipe(fd: int) -> bool:
    return stat.S_ISFIFO(os.fstat(fd).st_mode)


def _splice(fd_in: int, fd_out: int, want: int) -> int:
    while True:
        try:
            return os.splice(fd_in, fd_out, want, flags=os.SPLICE_F_MOVE | os.SPLICE_F_MORE)
        except InterruptedError:
            continue


def splice_all(fd_in: int, fd_out: int, limit: int = -1, chunk: int = CHUNK) -> int:
    """Moves bytes from ``fd_in`` to ``fd_out`` until EOF (or ``limit`` bytes) and returns the
    count. splice(2) needs a pipe on one side; between two other descriptors (a file and a
    socket) the bytes go through a pipe of our own."""
    moved = 0
    if _is_pipe(fd_in) or _is_pipe(fd_out):
        while limit < 0 or moved < limit:
            want = chunk if limit < 0 else min(chunk, limit - moved)
            n = _splice(fd_in, fd_out, want)
            if n == 0:
                break
            moved += n
        return moved
    rd, wr = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a smaller pipe only means more splices
            fcntl.fcntl(wr, fcntl.F_SETPIPE_SZ, chunk)
        while limit < 0 or moved < limit:
            want = chunk if limit < 0 else min(chunk, limit - moved)
            n = _splice(fd_in, wr, want)
            if n == 0:
                break
            while n > 0:
                m = _splice(rd, fd_out, n)
                if m == 0:
                    raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
                n -= m
                moved += m
    finally:
        os.close(rd)
        os.close(wr)
    return moved
