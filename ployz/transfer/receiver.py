"""The receiving end: serves one transfer into one sink, across as many connections as it takes.

Connections are handled one at a time. A connection that fails its handshake (no ticket, a bad
or expired one, another target, garbage) is refused and closed, and the receiver goes back to
accepting: a misbehaving client costs at most one handshake timeout. A connection that breaks
during the data phase leaves the sink at its commit point (whole, verified frames, fsynced) and
the sender resumes from there.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ployz._xfer import StreamReceiver
from ployz.transfer import protocol as p
from ployz.transfer.endpoints import Sink
from ployz.transfer.errors import (
    ChecksumMismatch,
    ConnectionLost,
    IdleTimeout,
    ProtocolError,
    Refused,
    TicketRefused,
    TransferError,
    native_error,
)
from ployz.transfer.faults import failure_code
from ployz.transfer.tickets import Ticket, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceiverTimeouts:
    handshake: float = 10.0  # from accept to a complete HELLO
    idle: float = 60.0  # no byte in or out during the data phase
    wait: float | None = None  # for the next connection; None waits forever
    drain: float = 2.0  # after a FAILURE, for the sender to notice before closing


@dataclass(frozen=True)
class ReceiveResult:
    evidence: dict[str, Any]
    bytes: int
    wire_bytes: int
    seconds: float
    resumes: int
    codec: str
    refused: int

    def summary(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "wire_bytes": self.wire_bytes,
                "seconds": round(self.seconds, 3), "resumes": self.resumes,
                "codec": self.codec, "refused": self.refused, "committed": self.evidence}


@dataclass
class _Transfer:
    """What the first accepted connection fixed for the whole transfer."""

    transfer_id: str
    ticket: Ticket
    frame_size: int
    codec: str
    stream: StreamReceiver | None = None


class Receiver:
    def __init__(self, listener: socket.socket, sink: Sink, trusted: Ed25519PublicKey, *,
                 timeouts: ReceiverTimeouts | None = None, workers: int = 2) -> None:
        self.listener = listener
        self.sink = sink
        self.trusted = trusted
        self.timeouts = timeouts or ReceiverTimeouts()
        self.workers = workers
        self.transfer: _Transfer | None = None
        self.accepted = 0
        self.refused = 0
        self.wire_bytes = 0
        self.started: float | None = None

    def serve(self) -> ReceiveResult:
        """Accepts connections until one commits the transfer. Raises on a failure that no
        reconnection can fix (sink errors, a whole-stream checksum mismatch) and on waiting
        longer than ``timeouts.wait`` for a connection."""
        while True:
            conn = self._accept()
            try:
                evidence = self._serve_connection(conn)
            except (Refused, TicketRefused, ProtocolError, ConnectionLost,
                    ChecksumMismatch) as exc:
                if isinstance(exc, Refused | TicketRefused):
                    self.refused += 1
                log.warning("connection refused or broken: %s", exc)
                continue
            finally:
                conn.close()
            transfer = self.transfer
            assert transfer is not None and transfer.stream is not None
            return ReceiveResult(evidence, transfer.stream.committed, self.wire_bytes,
                                 time.monotonic() - (self.started or time.monotonic()),
                                 max(self.accepted - 1, 0), transfer.codec, self.refused)

    def _accept(self) -> socket.socket:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        wait = self.timeouts.wait
        if not poller.poll(None if wait is None else wait * 1000):
            raise IdleTimeout(f"no sender connected within {wait} s")
        conn, _ = self.listener.accept()
        return conn

    def _refuse(self, conn: socket.socket, exc: Refused | TicketRefused) -> None:
        code = exc.code if isinstance(exc, Refused) else "ticket"
        message = exc.message if isinstance(exc, Refused) else str(exc)
        with contextlib.suppress(ConnectionLost):
            p.send_control(conn, {"type": p.REJECT, "code": code, "message": message})

    def _handshake(self, conn: socket.socket) -> tuple[_Transfer, dict[str, Any]]:
        p.send_control(conn, {"type": p.INFO, "protocol": p.PROTOCOL_VERSION,
                              "target": self.sink.target.as_dict()})
        hello = p.recv_control(conn, self.timeouts.handshake, (p.HELLO,))
        if hello.get("protocol") != p.PROTOCOL_VERSION:
            raise Refused("protocol", f"protocol {hello.get('protocol')!r} is not supported; "
                                      f"this receiver speaks {p.PROTOCOL_VERSION}")
        ticket = verify(hello.get("ticket"), self.trusted)
        transfer_id = p.require(hello, "transfer_id", str)
        frame_size = p.require(hello, "frame_size", int)
        codecs = p.require(hello, "codecs", list)
        stream = p.require(hello, "stream", dict)
        if ticket.transfer_id != transfer_id:
            raise TicketRefused(f"ticket is for transfer {ticket.transfer_id}, "
                                f"not {transfer_id}")
        if ticket.target != self.sink.target:
            raise TicketRefused(f"ticket names {ticket.target.kind} {ticket.target.name!r}; "
                                f"this receiver serves only {self.sink.target.name!r}")
        if not p.MIN_FRAME_SIZE <= frame_size <= p.MAX_FRAME_SIZE:
            raise Refused("frame_size", f"frame size {frame_size} outside "
                                        f"[{p.MIN_FRAME_SIZE}, {p.MAX_FRAME_SIZE}]")
        transfer = self.transfer
        if transfer is None:
            codec = "zstd" if "zstd" in codecs else "none"
            transfer = _Transfer(transfer_id, ticket, frame_size, codec)
        elif transfer.transfer_id != transfer_id or transfer.frame_size != frame_size:
            raise Refused("busy", f"this receiver is serving transfer {transfer.transfer_id}")
        return transfer, stream

    def _serve_connection(self, conn: socket.socket) -> dict[str, Any]:
        try:
            transfer, stream_info = self._handshake(conn)
            if self.transfer is None:
                adopted = self.sink.begin(transfer.transfer_id, transfer.ticket, stream_info,
                                          transfer.frame_size)
                self.transfer = transfer
                self.started = time.monotonic()
                transfer.stream = self._new_stream(transfer)
                if adopted:
                    transfer.stream.adopt(self.sink.adopted_fd(), adopted)
            elif self.sink.restarts_stream:
                transfer.stream = self._new_stream(transfer)
            stream = transfer.stream
            assert stream is not None
            resume = self.sink.resume_point(stream.committed)
        except (Refused, TicketRefused) as exc:
            self._refuse(conn, exc)
            raise
        p.send_control(conn, {"type": p.ACCEPT, "codec": transfer.codec,
                              "resume": resume.as_dict()})
        self.accepted += 1
        if resume.complete:
            return self._commit(conn, stream)
        p.set_socket_timeouts(conn, self.timeouts.idle)
        sink_fd = self.sink.open_run(stream.committed)
        wire_before = stream.wire_bytes
        kind, _errno, message = stream.run(conn.fileno(), sink_fd)
        self.wire_bytes += stream.wire_bytes - wire_before
        ended = kind == 0 and stream.ended
        try:
            self.sink.close_run(ended)
        except TransferError as exc:
            self._fail(conn, exc)
            raise
        if not ended:
            exc = native_error(kind, message) if kind else ProtocolError("stream ended early")
            self._fail(conn, exc)
            raise exc
        if stream.end_total != stream.committed or stream.end_chain != stream.chain_value:
            exc = ChecksumMismatch(
                f"whole-stream check failed: sender sent {stream.end_total} bytes with checksum "
                f"{stream.end_chain:016x}, receiver committed {stream.committed} bytes with "
                f"{stream.chain_value:016x}")
            self._fail(conn, exc)
            raise TransferError(str(exc)) from exc
        return self._commit(conn, stream)

    def _commit(self, conn: socket.socket, stream: StreamReceiver) -> dict[str, Any]:
        try:
            evidence = self.sink.commit(stream.chain_value, stream.committed)
        except TransferError as exc:
            self._fail(conn, exc)
            raise
        p.send_control(conn, {"type": p.COMMIT, "evidence": evidence,
                              "bytes": stream.committed})
        return evidence

    def _new_stream(self, transfer: _Transfer) -> StreamReceiver:
        return StreamReceiver(transfer.frame_size, transfer.codec == "zstd", self.workers)

    def _fail(self, conn: socket.socket, exc: TransferError) -> None:
        """Tells the sender why its stream was cut (best effort) and lets it notice before the
        connection closes, so that it does not mistake a checksum failure for a network one."""
        try:
            p.send_control(conn, {"type": p.FAILURE, "code": failure_code(exc),
                                  "message": str(exc)})
            conn.shutdown(socket.SHUT_WR)
        except (ConnectionLost, OSError):
            return
        deadline = time.monotonic() + self.timeouts.drain
        poller = select.poll()
        poller.register(conn, select.POLLIN)
        while (wait := deadline - time.monotonic()) > 0 and poller.poll(wait * 1000):
            try:
                if not conn.recv(1 << 16, socket.MSG_DONTWAIT):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return
