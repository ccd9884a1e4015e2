"""Process-wide libzfs_core initialisation and the one helper that turns a failed call into its
typed error."""

from __future__ import annotations

import threading

from ployz._lzc import lib
from ployz.zfs.errors import ZFSError, ZFSUnavailable, translate

_lock = threading.Lock()
_ready = False


def ensure_init() -> None:
    """Opens /dev/zfs once per process; a machine without the ZFS module gets ZFSUnavailable."""
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        rc = lib.libzfs_core_init()
        if rc != 0:
            raise ZFSUnavailable(
                rc, "/dev/zfs",
                "the ZFS kernel module is not available (no /dev/zfs); load it with "
                "`modprobe zfs` on a machine with ZFS installed")
        _ready = True


def check(rc: int, name: str, table: dict[int, tuple[type[ZFSError], str]] | None = None,
          action: str = "") -> None:
    if rc != 0:
        raise translate(rc, name, table, action)


def enc(name: str) -> bytes:
    return name.encode()
