"""A probe of the link: incompressible bytes through the engine for a few seconds, received into
nothing. What a migration's estimate measures the link with while the service runs, so that
it follows the link's load now rather than only the history of earlier sends.

The probe is an ordinary transfer (ticket, handshake, authenticated frames, checksums, the
receiver's acknowledgement), so it costs what a send costs apart from its source and its sink:
the source is a pipe fed for ``seconds`` from one random block (a rate limit's figure for a fixed
size would mean nothing on a link of unknown speed, a fixed time measures any link), the sink
discards. It never resumes: an interrupted probe failed, and the estimate does without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ployz.transfer.endpoints import ResumePoint, SourceRun
from ployz.transfer.errors import ProtocolError, Refused, SinkError
from ployz.transfer.tickets import Target, Ticket

BLOCK = 1 << 20
"""The random block the feeder repeats (the probe is sent uncompressed: its content matters
only in not being mistaken for something cheaper to send)."""
PIPE_SIZE = 1 << 20
MAX_PROBE_S = 10.0
"""A probe asks for at most this long: the agent refuses more (a probe is a few seconds)."""


def check_seconds(seconds: float) -> float:
    if not 0 < seconds <= MAX_PROBE_S:
        raise Refused("probe", f"a probe lasts more than 0 and at most {MAX_PROBE_S:.0f} s, "
                               f"not {seconds}")
    return seconds


class ProbeSource:
    """Random bytes for ``seconds`` from the moment the data phase opens it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = check_seconds(seconds)

    def stream_info(self) -> dict[str, Any]:
        return {"kind": "probe", "seconds": self.seconds}

    def estimated_size(self) -> int | None:
        return None

    @contextmanager
    def open(self, resume: ResumePoint, on_failure: Callable[[], None]) -> Iterator[SourceRun]:
        if resume.offset or resume.token is not None:
            raise ProtocolError("a probe does not resume")
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        stop = threading.Event()
        feeder = threading.Thread(target=_feed, args=(write_fd, self.seconds, stop),
                                  name="probe-feeder", daemon=True)
        feeder.start()
        try:
            yield SourceRun(read_fd, 0, seekable=False)
        finally:
            stop.set()
            os.close(read_fd)  # a feeder blocked on a full pipe wakes with EPIPE
            feeder.join()


def _feed(fd: int, seconds: float, stop: threading.Event) -> None:
    """Writes the block until ``seconds`` passed, then ends the stream by closing the pipe."""
    block = memoryview(os.urandom(BLOCK))
    deadline = time.monotonic() + seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            os.write(fd, block)
    except OSError:
        pass  # the reader is gone: the data path ended or failed, and says which
    finally:
        os.close(fd)


class ProbeSink:
    """Takes one probe's bytes and keeps none of them."""

    restarts_stream = False

    def __init__(self, transfer_id: str) -> None:
        self.target = Target("probe", transfer_id)
        self._null: int | None = None

    def begin(self, transfer_id: str, ticket: Ticket, stream: dict[str, Any],
              frame_size: int) -> int:
        if stream.get("kind") != "probe":
            raise Refused("stream", "a probe receiver takes only a probe")
        self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        return 0

    def adopted_fd(self) -> int:
        raise SinkError("a probe keeps nothing to adopt")

    def resume_point(self, committed: int) -> ResumePoint:
        return ResumePoint(offset=committed)

    def open_run(self, committed: int) -> int:
        if self._null is None:
            raise SinkError("probe sink used before begin()")
        if committed:
            raise SinkError("a probe does not resume")
        return self._null

    def close_run(self, ended: bool, committed: int) -> None:
        """Nothing was kept, so nothing is cut back."""

    def commit(self, stream_checksum: int, size: int) -> dict[str, Any]:
        if self._null is not None:
            with contextlib.suppress(OSError):
                os.close(self._null)
            self._null = None
        return {"kind": "probe", "size": size, "checksum": f"{stream_checksum:016x}"}
