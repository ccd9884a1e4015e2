"""Moving the calling thread between network namespaces (Python 3.11 has no ``os.setns``).

The sandbox's operator works from the first machine, as an operator logged in there would: the
process that builds the sandbox enters that machine's namespace, so its sockets (agent clients,
the control plane) and the commands it runs (``ployzctl``) see the overlay; it steps back into
the VM's own namespace for the test bed's plumbing (the bridge, new veths).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _enter(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


ROOT = Path("/proc/1/ns/net")
"""The VM's own namespace (that of its init)."""


def enter(path: Path) -> None:
    """This thread (and whatever it starts from now on) moves into the namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _enter(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(path: Path) -> Iterator[None]:
    """Runs the block in the namespace at ``path``, then returns to this thread's own."""
    here = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        enter(path)
        yield
    finally:
        _enter(here)
        os.close(here)
