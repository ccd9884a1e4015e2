"""Typed ZFS errors: every failure names the dataset and says what happened, so callers can act on
the type and operators can act on the message."""

from __future__ import annotations

import errno as E
import os

from ployz._lzc import lib


class ZFSError(Exception):
    """A libzfs_core call failed. ``errno`` is the kernel's code, ``name`` the dataset, snapshot or
    bookmark concerned."""

    def __init__(self, errno: int, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.errno = errno
        self.name = name
        self.message = message


class ZFSUnavailable(ZFSError):
    """No ZFS kernel module (no /dev/zfs) on this machine."""


class DatasetNotFound(ZFSError):
    pass


class DatasetExists(ZFSError):
    pass


class DatasetBusy(ZFSError):
    """Mounted, has dependents (snapshots, clones, children) or is in use by another operation."""


class SnapshotHeld(ZFSError):
    """A user hold protects the snapshot from destruction."""


class HoldExists(ZFSError):
    pass


class HoldNotFound(ZFSError):
    pass


class IncrementalBaseMismatch(ZFSError):
    """The incremental base is not what the other side has: on send, the base is not an earlier
    snapshot or bookmark of the same dataset; on receive, the target's latest snapshot is not the
    stream's base."""


class DestinationModified(ZFSError):
    """The receive target changed since its latest snapshot (roll back or use force)."""


class StreamTruncated(ZFSError):
    """The send stream ended early; a resumable receive leaves a resume token behind."""


class BadStream(ZFSError):
    """The stream is corrupt, of an unknown feature, or not a ZFS send stream."""


class ResumeStateExists(ZFSError):
    """The target holds partial state of an interrupted receive: resume it or abort it."""


class NoResumableReceive(ZFSError):
    """There is no interrupted receive to resume or abort on this dataset."""


class InvalidResumeToken(ZFSError):
    pass


class NoSpace(ZFSError):
    """The pool is full or a quota is reached."""


class PermissionDenied(ZFSError):
    pass


class InvalidName(ZFSError):
    pass


class EncryptionKeyNotLoaded(ZFSError):
    pass


# errno -> (exception, message) shared by most calls; each call adds its own meanings on top.
_COMMON: dict[int, tuple[type[ZFSError], str]] = {
    E.ENOENT: (DatasetNotFound, "does not exist"),
    E.EEXIST: (DatasetExists, "already exists"),
    E.EBUSY: (DatasetBusy, "is busy (mounted, in use, or has dependents)"),
    E.ENOSPC: (NoSpace, "out of space in the pool"),
    E.EDQUOT: (NoSpace, "quota exceeded"),
    E.EPERM: (PermissionDenied, "permission denied (ZFS administration needs root)"),
    E.EACCES: (PermissionDenied, "permission denied (is the encryption key loaded?)"),
    E.ENAMETOOLONG: (InvalidName, "name is too long"),
    E.EINVAL: (ZFSError, "invalid argument"),
    E.EXDEV: (IncrementalBaseMismatch, "is not an earlier snapshot of the same dataset"),
}

SEND_ERRORS: dict[int, tuple[type[ZFSError], str]] = {
    E.EXDEV: (IncrementalBaseMismatch,
              "the incremental base is not an earlier snapshot or bookmark of the same dataset"),
    lib.ZFS_ERR_BOOKMARK_SOURCE_NOT_ANCESTOR: (
        IncrementalBaseMismatch, "the bookmark is not an ancestor of the snapshot"),
    E.EPIPE: (ZFSError, "the reader of the send stream went away (broken pipe)"),
    E.EACCES: (EncryptionKeyNotLoaded,
               "the dataset is encrypted and its key is not loaded; send it raw"),
}

RECEIVE_ERRORS: dict[int, tuple[type[ZFSError], str]] = {
    E.ENODEV: (IncrementalBaseMismatch,
               "the target's most recent snapshot does not match the stream's incremental base"),
    E.ETXTBSY: (DestinationModified,
                "the target was modified since its most recent snapshot (roll back, or receive "
                "with force)"),
    E.EEXIST: (DatasetExists, "the snapshot or dataset already exists on the target"),
    # ZFS's ECKSUM is Linux's EBADE.
    E.EBADE: (BadStream, "the stream failed its checksum (corrupted in transit)"),
    E.EINVAL: (BadStream, "the stream is invalid or of an unsupported kind"),
    E.ENOTSUP: (BadStream, "the stream uses a feature this pool does not support"),
    E.ENOENT: (DatasetNotFound, "the target's parent dataset or the incremental base does not "
               "exist"),
    lib.ZFS_ERR_STREAM_TRUNCATED: (
        StreamTruncated, "the stream ended early (truncated); a resumable receive kept a token"),
    lib.ZFS_ERR_RESUME_EXISTS: (
        ResumeStateExists, "an interrupted receive is pending here: resume or abort it first"),
    lib.ZFS_ERR_UNKNOWN_SEND_STREAM_FEATURE: (
        BadStream, "the stream uses a feature unknown to this ZFS version"),
    lib.ZFS_ERR_STREAM_LARGE_BLOCK_MISMATCH: (
        BadStream, "the stream's large-block setting differs from the partial receive's"),
    lib.ZFS_ERR_FROM_IVSET_GUID_MISMATCH: (
        IncrementalBaseMismatch, "the encrypted incremental base does not match (ivset guid)"),
    lib.ZFS_ERR_FROM_IVSET_GUID_MISSING: (
        IncrementalBaseMismatch, "the encrypted incremental base lacks an ivset guid"),
    lib.ZFS_ERR_CRYPTO_NOTSUP: (BadStream, "the raw stream's encryption is not supported here"),
    lib.ZFS_ERR_WRONG_PARENT: (
        BadStream, "an encrypted raw stream must be received under an unencrypted parent or "
        "its own encryption root"),
}

DESTROY_SNAPSHOT_ERRORS: dict[int, tuple[type[ZFSError], str]] = {
    E.EBUSY: (SnapshotHeld, "has user holds or clones and cannot be destroyed now"),
    E.EEXIST: (DatasetBusy, "has dependent clones"),
}

HOLD_ERRORS: dict[int, tuple[type[ZFSError], str]] = {
    E.EEXIST: (HoldExists, "already has a hold with this tag"),
    E.E2BIG: (InvalidName, "hold tag is too long"),
}

# The kernel names a missing hold ``snapshot#tag`` and reports ENOENT (ESRCH on older releases).
RELEASE_ERRORS: dict[int, tuple[type[ZFSError], str]] = {
    E.ENOENT: (HoldNotFound, "no such hold (or no such snapshot)"),
    E.ESRCH: (HoldNotFound, "no such hold"),
}


def translate(err: int, name: str, table: dict[int, tuple[type[ZFSError], str]] | None = None,
              action: str = "") -> ZFSError:
    """Turns an errno from one call into its typed exception; ``table`` holds that call's own
    meanings, which win over the common ones."""
    cls, message = (table or {}).get(err) or _COMMON.get(err) or (
        ZFSError, os.strerror(err) if err < 1024 else f"ZFS error {err}")
    if action:
        message = f"{action}: {message}"
    return cls(err, name, message)
