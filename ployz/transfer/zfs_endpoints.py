"""ZFS snapshots as a source and ZFS datasets as a sink, through ``ployz.zfs`` (libzfs_core).

``zfs send`` writes into a pipe from a thread and the data path reads the pipe; on the other
side the data path writes a pipe that ``zfs receive`` reads in a thread. Both pipes are sized
before any data flows. Every connection is a new ZFS stream: the first a full or incremental
send, each later one a resumed send from the receive resume token, which the receiver checks
against the stream's toguid, fromguid and toname before offering it (a stale token is aborted and
reported, and the receive starts over).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ployz import zfs
from ployz.transfer.endpoints import ResumePoint, SourceRun
from ployz.transfer.errors import ProtocolError, Refused, SinkError, SourceError
from ployz.transfer.tickets import Target, Ticket
from ployz.zfs.names import expand_base, is_within, short_name

PIPE_SIZE = 1 << 20


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # while it is still empty
    return read_fd, write_fd


class _Worker(threading.Thread):
    """Runs one blocking ``ployz.zfs`` stream call and keeps its error."""

    def __init__(self, name: str, call: Callable[[], None],
                 on_error: Callable[[], None] | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.call, self.on_error = call, on_error
        self.error: zfs.ZFSError | None = None

    def run(self) -> None:
        try:
            self.call()
        except zfs.ZFSError as exc:
            self.error = exc
            if self.on_error:
                self.on_error()


class ZfsSource:
    def __init__(self, snapshot: str, *, base: str | None = None, raw: bool = False) -> None:
        if "@" not in snapshot:
            raise SourceError(f"{snapshot!r} is not a snapshot (POOL/DS@SNAP)")
        self.snapshot, self.raw = snapshot, raw
        self.base = expand_base(snapshot, base)
        try:
            self.toguid = zfs.guid_of(snapshot)
            self.fromguid = zfs.guid_of(self.base) if self.base else None
            self.size = zfs.send_space(snapshot, self.base, raw=raw)
        except zfs.ZFSError as exc:
            raise SourceError(f"cannot send {snapshot}: {exc}") from exc

    def stream_info(self) -> dict[str, Any]:
        return {"kind": "zfs", "toname": self.snapshot, "toguid": self.toguid,
                "fromguid": self.fromguid, "raw": self.raw, "size": self.size}

    def estimated_size(self) -> int:
        return self.size

    @contextmanager
    def open(self, resume: ResumePoint, on_failure: Callable[[], None]) -> Iterator[SourceRun]:
        if resume.offset:
            raise ProtocolError("a ZFS stream resumes from a token, not an offset")
        done_before = 0
        if resume.token is not None:
            token = zfs.ResumeToken.parse(resume.token)
            done_before = token.bytes
            if (token.toguid, token.fromguid) != (self.toguid, self.fromguid or 0):
                raise ProtocolError(f"receiver offered a resume token for guid {token.toguid} "
                                    f"(base {token.fromguid}); this stream is {self.toguid}")

            def call() -> None:
                zfs.send_resume(token, write_fd)
        else:
            def call() -> None:
                zfs.send(self.snapshot, write_fd, base=self.base, raw=self.raw)

        read_fd, write_fd = _pipe()

        def send_then_close() -> None:
            try:
                call()
            finally:
                os.close(write_fd)

        worker = _Worker(f"zfs-send {self.snapshot}", send_then_close, on_failure)
        worker.start()
        run_failed = False
        try:
            yield SourceRun(read_fd, 0, seekable=False, done_before=done_before)
        except BaseException:
            run_failed = True
            raise
        finally:
            os.close(read_fd)  # a send still writing fails (EPIPE, or EINTR) and ends
            worker.join()
            error = worker.error
            # after a failed run the send's EPIPE/EINTR only echoes our closing the pipe
            if error and not (run_failed and error.errno in (errno.EPIPE, errno.EINTR)):
                raise SourceError(f"zfs send of {self.snapshot} failed: {error}")


class ZfsSink:
    restarts_stream = True

    def __init__(self, dataset: str, prefix: str | None = None,
                 props: Mapping[str, int | str] | None = None) -> None:
        """``props`` are set on the dataset a full stream creates (its quota, for a volume
        moving to this machine): a send without properties would leave it unlimited."""
        if "@" in dataset or "#" in dataset:
            raise SinkError(f"{dataset!r} is a snapshot or bookmark; give the dataset")
        if prefix and not is_within(dataset, prefix):
            raise SinkError(f"{dataset} is outside the allowed prefix {prefix}")
        self.dataset = dataset
        self.target = Target("zfs", dataset)
        self.snapshot = ""
        self.toname = ""
        self.toguid = 0
        self.fromguid = 0
        self.raw = False
        self.props = dict(props or {})
        self._write_fd: int | None = None
        self._worker: _Worker | None = None

    def begin(self, transfer_id: str, ticket: Ticket, stream: dict[str, Any],
              frame_size: int) -> int:
        toname, toguid, fromguid = stream.get("toname"), stream.get("toguid"), stream.get(
            "fromguid")
        if (stream.get("kind") != "zfs" or not isinstance(toname, str) or "@" not in toname
                or not isinstance(toguid, int) or not isinstance(fromguid, int | None)):
            raise Refused("stream", "a ZFS sink takes only ZFS streams with toname and guids")
        if ticket.toguid != toguid or ticket.fromguid != fromguid:
            raise Refused("ticket", f"the ticket allows guid {ticket.toguid} from "
                                    f"{ticket.fromguid}, the stream is {toguid} from {fromguid}")
        self.toname, self.toguid, self.fromguid = toname, toguid, fromguid or 0
        self.snapshot = f"{self.dataset}@{short_name(toname)}"
        self.raw = bool(stream.get("raw"))
        return 0

    def adopted_fd(self) -> int:
        raise SinkError("a ZFS sink resumes from its token, never from adopted bytes")

    def resume_point(self, committed: int) -> ResumePoint:
        try:
            if zfs.exists(self.snapshot):
                if zfs.guid_of(self.snapshot) != self.toguid:
                    raise Refused("exists", f"{self.snapshot} exists with another guid; "
                                            f"refusing to overwrite it")
                return ResumePoint(complete=True)
            token = zfs.resume_token(self.dataset) if zfs.exists(self.dataset) else None
            if token is None:
                return ResumePoint()
            if (token.toguid, token.fromguid, token.toname) == (
                    self.toguid, self.fromguid, self.toname):
                return ResumePoint(token=token.text, held=token.bytes)
            zfs.abort_receive(self.dataset)
        except zfs.ZFSError as exc:
            raise SinkError(f"cannot inspect the partial receive on {self.dataset}: "
                            f"{exc}") from exc
        return ResumePoint(notices=(
            f"stale resume token on {self.dataset} (for {token.toname}, guid {token.toguid}, "
            f"base {token.fromguid}) aborted; the receive starts over",))

    def open_run(self, committed: int) -> int:
        read_fd, write_fd = _pipe()

        def receive_then_close() -> None:
            try:
                props = None if self.fromguid else self.props or None
                zfs.receive(self.snapshot, read_fd, resumable=True, raw=self.raw, props=props)
            finally:
                os.close(read_fd)

        self._write_fd = write_fd
        self._worker = _Worker(f"zfs-receive {self.snapshot}", receive_then_close)
        self._worker.start()
        return write_fd

    def close_run(self, ended: bool, committed: int) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)  # end of stream for zfs receive
            self._write_fd = None
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.join()
        # A connection that broke leaves a truncated stream: receive fails, keeping its token.
        # A full pool (or quota) fails it first, and the run then breaks on the closed pipe:
        # that cause, not the broken pipe, is what the sender must hear, and no resume helps.
        if worker.error and (ended or isinstance(worker.error, zfs.NoSpace)):
            raise SinkError(f"zfs receive into {self.snapshot} failed: {worker.error}")

    def commit(self, stream_checksum: int, size: int) -> dict[str, Any]:
        try:
            guid = zfs.guid_of(self.snapshot)
        except zfs.ZFSError as exc:
            raise SinkError(f"received snapshot {self.snapshot} is missing: {exc}") from exc
        if guid != self.toguid:
            raise SinkError(f"received {self.snapshot} has guid {guid}, expected {self.toguid}")
        return {"kind": "zfs", "snapshot": self.snapshot, "guid": guid, "size": size,
                "checksum": f"{stream_checksum:016x}"}
