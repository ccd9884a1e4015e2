"""Typed Python API over libzfs_core: snapshots, bookmarks, holds, send, receive and resume.

Everything here goes through ``ployz._lzc`` (cffi, API mode); no ``zfs`` command is run. Errors
are ``ZFSError`` subclasses carrying the errno and the dataset concerned.
"""

from ployz.zfs.datasets import (
    create,
    destroy,
    exists,
    get,
    mount,
    mounts_of,
    rename,
    sync,
    unmount,
)
from ployz.zfs.errors import (
    BadStream,
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationModified,
    EncryptionKeyNotLoaded,
    HoldExists,
    HoldNotFound,
    IncrementalBaseMismatch,
    InvalidName,
    InvalidResumeToken,
    NoResumableReceive,
    NoSpace,
    PermissionDenied,
    ResumeStateExists,
    SnapshotHeld,
    StreamTruncated,
    ZFSError,
    ZFSUnavailable,
)
from ployz.zfs.resume import ResumeToken
from ployz.zfs.snapshots import (
    Snapshot,
    bookmark,
    bookmarks,
    destroy_bookmarks,
    destroy_snapshots,
    guid_of,
    hold,
    holds,
    release,
    rollback,
    snapshot,
    snapshots,
)
from ployz.zfs.streams import (
    abort_receive,
    receive,
    resume_token,
    send,
    send_resume,
    send_space,
)

__all__ = [
    "BadStream", "DatasetBusy", "DatasetExists", "DatasetNotFound", "DestinationModified",
    "EncryptionKeyNotLoaded", "HoldExists", "HoldNotFound", "IncrementalBaseMismatch",
    "InvalidName", "InvalidResumeToken", "NoResumableReceive", "NoSpace", "PermissionDenied",
    "ResumeStateExists", "ResumeToken", "Snapshot", "SnapshotHeld", "StreamTruncated",
    "ZFSError", "ZFSUnavailable", "abort_receive", "bookmark", "bookmarks", "create", "destroy",
    "destroy_bookmarks", "destroy_snapshots", "exists", "get", "guid_of", "hold", "holds", "mount",
    "mounts_of", "receive", "release", "rename", "resume_token", "rollback", "send",
    "send_resume", "send_space", "snapshot", "snapshots", "sync", "unmount",
]
