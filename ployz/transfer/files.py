"""Plain files as a source and a sink: the same engine without ZFS, for tuning and for hosts
that have no ZFS.

The sink writes ``NAME.partial`` beside the target, with a small ``NAME.partial.json`` naming the
transfer, and renames it into place only at commit, so a reader never sees half a file. A
receiver that restarts finds the partial file of the same transfer and resumes after its whole
frames (the durable, fsynced prefix).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ployz.transfer.endpoints import ResumePoint, SourceRun
from ployz.transfer.errors import ProtocolError, Refused, SinkError, SourceError
from ployz.transfer.tickets import Target, Ticket


class FileSource:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror}") from exc

    def stream_info(self) -> dict[str, Any]:
        return {"kind": "file", "size": self.size}

    def estimated_size(self) -> int:
        return self.size

    @contextmanager
    def open(self, resume: ResumePoint, on_failure: Callable[[], None]) -> Iterator[SourceRun]:
        if resume.token is not None or not 0 <= resume.offset <= self.size:
            raise ProtocolError(f"receiver asked to resume a {self.size}-byte file at "
                                f"{resume.offset} (token {resume.token!r})")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceError(f"cannot open {self.path}: {exc.strerror}") from exc
        try:
            os.lseek(fd, resume.offset, os.SEEK_SET)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            yield SourceRun(fd, resume.offset, seekable=True)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSink:
    restarts_stream = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(path))
        if not self.path.parent.is_dir():
            raise SinkError(f"directory {self.path.parent} does not exist")
        self.target = Target("file", str(self.path))
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.meta = self.path.with_name(self.path.name + ".partial.json")
        self.fd: int | None = None
        self.size: int | None = None  # what the sender announced

    def begin(self, transfer_id: str, ticket: Ticket, stream: dict[str, Any],
              frame_size: int) -> int:
        if stream.get("kind") != "file":
            raise Refused("stream", "a file sink takes only file streams")
        size = stream.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise Refused("stream", "a file stream must announce its size")
        self.size = size
        state = {"transfer_id": transfer_id, "frame_size": frame_size}
        try:
            earlier = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            earlier = None
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        adopt = earlier == state and self.partial.exists()
        try:
            self.fd = os.open(self.partial, flags if adopt else flags | os.O_TRUNC, 0o644)
            if adopt:
                size = os.fstat(self.fd).st_size
                return size - size % frame_size
            self.meta.write_text(json.dumps(state))
            os.fsync(self.fd)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise SinkError(f"cannot create {self.partial}: {exc.strerror}") from exc
        return 0

    def _fd(self) -> int:
        if self.fd is None:
            raise SinkError("file sink used before begin()")
        return self.fd

    def adopted_fd(self) -> int:
        return self._fd()

    def resume_point(self, committed: int) -> ResumePoint:
        os.fsync(self._fd())
        return ResumePoint(offset=committed)

    def open_run(self, committed: int) -> int:
        fd = self._fd()
        # bytes past the commit point belong to a frame whose write was interrupted
        os.ftruncate(fd, committed)
        os.lseek(fd, committed, os.SEEK_SET)
        return fd

    def close_run(self, ended: bool, committed: int) -> None:
        # a write that failed (a full disk) may have left a torn frame past the commit point;
        # cutting it gives the space back at once instead of at the next connection
        fd = self._fd()
        try:
            os.ftruncate(fd, committed)
            os.fsync(fd)
        except OSError as exc:
            raise SinkError(f"cannot cut {self.partial} back to {committed} bytes: "
                            f"{exc.strerror}") from exc

    def commit(self, stream_checksum: int, size: int) -> dict[str, Any]:
        fd = self._fd()
        if size != self.size:  # the source changed under the sender: not the file announced
            raise SinkError(f"the stream ended after {size} bytes of the {self.size} announced; "
                            f"{self.path} was not written (the partial file stays)")
        try:
            os.fsync(fd)
            os.rename(self.partial, self.path)
            self.meta.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise SinkError(f"cannot commit {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
            self.fd = None
        return {"kind": "file", "path": str(self.path), "size": size,
                "checksum": f"{stream_checksum:016x}"}
