"""Send and receive: ZFS streams written to and read from file descriptors (pipes), with resume.

Each call blocks for the length of the stream; cffi drops the GIL for its duration, so a sender
thread and a receiver thread in one process run in parallel.
"""

from __future__ import annotations

from collections.abc import Mapping

from ployz._lzc import ffi, lib
from ployz.zfs.core import check, enc, ensure_init
from ployz.zfs.datasets import destroy, get
from ployz.zfs.errors import (
    RECEIVE_ERRORS,
    SEND_ERRORS,
    IncrementalBaseMismatch,
    NoResumableReceive,
)
from ployz.zfs.names import dataset_of, expand_base
from ployz.zfs.nvlist import NvValue, nvlist_in
from ployz.zfs.resume import ResumeToken
from ployz.zfs.snapshots import bookmarks, snapshots


def _flags(large_blocks: bool, embedded: bool, compressed: bool, raw: bool) -> int:
    flags = 0
    if large_blocks:
        flags |= lib.LZC_SEND_FLAG_LARGE_BLOCK
    if embedded:
        flags |= lib.LZC_SEND_FLAG_EMBED_DATA
    if compressed:
        flags |= lib.LZC_SEND_FLAG_COMPRESS
    if raw:
        flags |= lib.LZC_SEND_FLAG_RAW
    return flags


def _c_or_null(name: str | None) -> object:
    return ffi.NULL if name is None else enc(name)


def send(snapshot: str, fd: int, *, base: str | None = None, large_blocks: bool = True,
         embedded: bool = True, compressed: bool = True, raw: bool = False) -> None:
    """Writes the stream of ``snapshot`` (incremental from ``base``, a snapshot or a bookmark) to
    ``fd``. Give it a pipe: for any other fd, libzfs_core interposes its own pipe and thread."""
    ensure_init()
    check(lib.lzc_send(enc(snapshot), _c_or_null(expand_base(snapshot, base)), fd,
                       _flags(large_blocks, embedded, compressed, raw)),
          snapshot, SEND_ERRORS, "send")


def send_space(snapshot: str, base: str | None = None, *, large_blocks: bool = True,
               embedded: bool = True, compressed: bool = True, raw: bool = False) -> int:
    """Estimated size in bytes of the stream ``send`` would write with the same arguments."""
    ensure_init()
    out = ffi.new("uint64_t *")
    check(lib.lzc_send_space(enc(snapshot), _c_or_null(expand_base(snapshot, base)),
                             _flags(large_blocks, embedded, compressed, raw), out),
          snapshot, SEND_ERRORS, "estimate send size")
    return int(out[0])


def _base_by_guid(token: ResumeToken) -> str | None:
    """The local snapshot or bookmark whose guid is the token's incremental base."""
    if not token.incremental:
        return None
    dataset = dataset_of(token.toname)
    for candidate in [*snapshots(dataset), *bookmarks(dataset)]:
        if candidate.guid == token.fromguid:
            return candidate.name
    raise IncrementalBaseMismatch(
        0, token.toname,
        f"resume: no snapshot or bookmark of {dataset} has the token's base guid {token.fromguid}")


def send_resume(token: ResumeToken | str, fd: int) -> None:
    """Writes the rest of the stream an interrupted receive asked for in ``token``."""
    ensure_init()
    if isinstance(token, str):
        token = ResumeToken.parse(token)
    base = _base_by_guid(token)
    flags = _flags(token.large_blocks, token.embedded, token.compressed, token.raw)
    check(lib.lzc_send_resume(enc(token.toname), _c_or_null(base), fd, flags, token.object,
                              token.offset),
          token.toname, SEND_ERRORS, "resume send")


def receive(snapshot: str, fd: int, *, resumable: bool = True, force: bool = False,
            raw: bool = False, props: Mapping[str, NvValue] | None = None,
            origin: str | None = None) -> None:
    """Reads a stream from ``fd`` into ``snapshot`` (``ds@snap``). With ``resumable`` an
    interrupted receive keeps its partial state and a resume token; a resuming stream continues
    that state. ``force`` rolls the target back to its latest snapshot first."""
    ensure_init()
    call = lib.lzc_receive_resumable if resumable else lib.lzc_receive
    with nvlist_in(props) as nvprops:
        check(call(enc(snapshot), nvprops, _c_or_null(origin), int(force), int(raw), fd),
              snapshot, RECEIVE_ERRORS, "receive")


def resume_token(dataset: str) -> ResumeToken | None:
    """The parsed token of an interrupted resumable receive into ``dataset``, or None."""
    text = get(dataset, ["receive_resume_token"])["receive_resume_token"]
    return ResumeToken.parse(text) if text else None


def abort_receive(dataset: str) -> None:
    """Discards the partial state of an interrupted receive (what ``zfs receive -A`` does): the
    hidden ``%recv`` clone of an incremental, or the inconsistent dataset of a full receive."""
    ensure_init()
    partial = f"{dataset}/%recv"
    if lib.lzc_exists(enc(partial)):
        check(lib.lzc_destroy(enc(partial)), partial, action="abort receive")
        return
    if lib.lzc_exists(enc(dataset)) and resume_token(dataset) is not None:
        destroy(dataset)
        return
    raise NoResumableReceive(0, dataset, "there is no interrupted receive to abort")
