"""What a stream reads from and writes to. Files and ZFS snapshots/datasets implement the same
two interfaces, so the sender and receiver know nothing of either.

A source opens once per connection at the resume point the receiver announced; a sink keeps
its state across connections and commits once, at the end, returning the evidence of what it
committed (reported to the sender in the final acknowledgement).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ployz.transfer.tickets import Target, Ticket


@dataclass(frozen=True)
class SourceRun:
    """An opened source: read ``fd`` from stream offset ``offset``. ``seekable`` sources can
    have their prefix re-read (``pread``) to rebuild checksums of frames sent by another run.
    ``done_before`` counts bytes of the transfer that earlier streams already delivered (a ZFS
    resume starts a new stream at offset 0), so that progress never runs backwards."""

    fd: int
    offset: int
    seekable: bool
    done_before: int = 0


@dataclass(frozen=True)
class ResumePoint:
    """Where the next connection starts: a byte offset into the current stream, or for ZFS a
    receive resume token (a new stream that picks up where the partial receive stopped).
    ``complete``: the target already holds exactly this stream (a ZFS snapshot with the right
    guid), so no data needs to flow and the transfer commits at once.
    ``notices`` tell the sender about decisions taken, such as a stale token aborted."""

    offset: int = 0
    token: str | None = None
    notices: tuple[str, ...] = field(default_factory=tuple)
    complete: bool = False
    held: int = 0
    """Bytes of the stream the sink already holds, which this connection does not carry
    again (the token's byte count; not sent to the sender: for the receiver's summary)."""

    def as_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "token": self.token, "notices": list(self.notices),
                "complete": self.complete}


class Source(Protocol):
    def stream_info(self) -> dict[str, Any]:
        """Facts the receiver checks against the ticket: kind, size, snapshot name and guids."""

    def estimated_size(self) -> int | None:
        """Bytes the stream is expected to have (exact for files, an estimate for ZFS)."""

    def open(self, resume: ResumePoint,
             on_failure: Any) -> AbstractContextManager[SourceRun]:
        """Opens the source at ``resume``. ``on_failure()`` is called if the source fails after
        the data path started (it must stop the stream before the end frame is sent)."""


class Sink(Protocol):
    target: Target
    #: whether every connection starts a new stream at offset 0 (ZFS resume tokens) rather
    #: than continuing the one stream at the commit point (files)
    restarts_stream: bool

    def begin(self, transfer_id: str, ticket: Ticket, stream: dict[str, Any],
              frame_size: int) -> int:
        """Prepares for the transfer on its first accepted connection; checks the stream facts
        against the ticket. Returns how many bytes an earlier receiver already committed for
        this same transfer (adopted; 0 if none)."""

    def adopted_fd(self) -> int:
        """A readable fd of the adopted prefix (only called when ``begin`` returned > 0)."""

    def resume_point(self, committed: int) -> ResumePoint:
        """Makes everything committed durable and says where the next connection starts."""

    def open_run(self, committed: int) -> int:
        """The fd the data path writes this connection's bytes to."""

    def close_run(self, ended: bool, committed: int) -> None:
        """After a connection's data phase; ``ended`` if the end frame arrived intact.
        ``committed``: the verified length, which is all that may stay of a failed run."""

    def commit(self, stream_checksum: int, size: int) -> dict[str, Any]:
        """Makes the result visible and durable; returns the evidence of what was committed."""
