"""The receiving end: serves one transfer into one sink, across as many connections as it takes.

Connections are authenticated concurrently, each in its own thread, so that a client that
connects and never speaks (or speaks one byte a second) costs one of a bounded number of
pending slots and never delays a real sender; when the slots are full the oldest pending
connection is dropped. Only an authenticated connection reaches the sink, and only such a
connection counts as activity for the receiver's wait. A newer authenticated connection of the
transfer being served replaces the current one: its sender gave the old one up.

A connection that breaks during the data phase leaves the sink at its commit point (whole,
verified frames, fsynced) and the sender resumes from there. Once committed, the receiver waits
for the sender's ACK of the COMMIT; if the connection breaks first, it lingers, answering a
reconnecting sender of the same transfer with the committed outcome.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ployz._xfer import ERROR_KINDS, StreamReceiver
from ployz.transfer import protocol as p
from ployz.transfer import session
from ployz.transfer.endpoints import ResumePoint, Sink
from ployz.transfer.errors import (
    AuthenticationFailed,
    ConnectionLost,
    IdleTimeout,
    ProtocolError,
    Refused,
    SinkError,
    StreamChecksumMismatch,
    TicketRefused,
    TransferAborted,
    TransferError,
    native_error,
)
from ployz.transfer.faults import failure_code
from ployz.transfer.results import ReceiveResult
from ployz.transfer.tickets import Ticket, verify_any

log = logging.getLogger(__name__)

MAX_PENDING = 64  # connections authenticating at once; the oldest goes when one more comes


@dataclass(frozen=True)
class ReceiverTimeouts:
    handshake: float = 10.0  # from accept to a complete HELLO
    idle: float = 60.0  # no byte in or out during the data phase
    wait: float | None = None  # for the next authenticated connection; None waits forever
    drain: float = 2.0  # after a FAILURE, for the sender to notice before closing
    ack: float = 10.0  # after COMMIT, for the sender's ACK
    linger: float = 60.0  # after a COMMIT whose ACK never came, for the sender to reconnect


@dataclass
class _Transfer:
    """What the first accepted connection fixed for the whole transfer."""

    transfer_id: str
    ticket: Ticket
    frame_size: int
    codec: str
    encrypt: bool
    stream_info: dict[str, Any]
    stream: StreamReceiver | None = None
    resumed_bytes: int = 0
    committed: tuple[dict[str, Any], int] | None = None  # evidence and bytes, once committed


@dataclass
class _Session:
    """An authenticated connection, handed from its handshake thread to the serving loop."""

    conn: socket.socket
    channel: p.Channel
    hello: dict[str, Any]
    ticket: Ticket
    stream: dict[str, Any]
    transcript: bytes
    abort: str | None = None


@dataclass
class _Pending:
    """The connections still authenticating, oldest first."""

    limit: int
    conns: list[socket.socket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, conn: socket.socket) -> None:
        with self.lock:
            self.conns.append(conn)
            evicted = self.conns.pop(0) if len(self.conns) > self.limit else None
        if evicted is not None:
            _cut(evicted)

    def remove(self, conn: socket.socket) -> None:
        with self.lock, contextlib.suppress(ValueError):
            self.conns.remove(conn)

    def cut_all(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            _cut(conn)


def _cut(conn: socket.socket) -> None:
    """Ends a connection that another thread may be reading: shutdown wakes that thread, and
    the thread that owns the socket closes it."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


_CANCELLED = object()


class Receiver:
    """Receives one transfer into ``sink``. Tickets are accepted from any of the ``trusted``
    keys. With a ``secret`` (agents: the orchestrator gives it to both ends) the sender must
    prove it holds that secret; without one, that it holds the key that signed its ticket. A
    receiver given its own signing ``key`` proves itself to senders that ask."""

    def __init__(self, listener: socket.socket, sink: Sink,
                 trusted: Ed25519PublicKey | Sequence[Ed25519PublicKey], *,
                 timeouts: ReceiverTimeouts | None = None, workers: int = 2,
                 secret: bytes | None = None, key: Ed25519PrivateKey | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        self.listener = listener
        self.sink = sink
        self.trusted = (trusted,) if isinstance(trusted, Ed25519PublicKey) else tuple(trusted)
        if not self.trusted:
            raise ValueError("a receiver needs at least one trusted key")
        self.timeouts = timeouts or ReceiverTimeouts()
        self.workers = workers
        self.secret = secret
        self.key = key
        self.transfer: _Transfer | None = None
        self.accepted = 0
        self.refused = 0
        self.wire_bytes = 0
        self.started: float | None = None
        self._pending = _Pending(max_pending)
        self._ready: queue.Queue[_Session | object] = queue.Queue()
        self._lock = threading.Lock()
        self._current: socket.socket | None = None
        self._closing = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        self._on_commit: Callable[[ReceiveResult], None] | None = None

    # ---- the serving loop ---------------------------------------------------------------------

    def serve(self, on_commit: Callable[[ReceiveResult], None] | None = None) -> ReceiveResult:
        """Serves authenticated connections until one commits the transfer and its sender
        acknowledged it (or stopped reconnecting). Raises on a failure that no reconnection can
        fix (sink errors, a whole-stream checksum mismatch, the sender's ABORT), on waiting
        longer than ``timeouts.wait`` for an authenticated connection, and on ``cancel()``.
        ``on_commit`` hears the outcome as soon as it is committed, while the receiver may still
        wait for the sender's ACK: whoever waits for the outcome need not wait for that too."""
        self._on_commit = on_commit
        acceptor = threading.Thread(target=self._accept_loop, name="ployz-receive-accept",
                                    daemon=True)
        acceptor.start()
        try:
            return self._serve_sessions()
        finally:
            self._closing.set()
            os.write(self._wake_write, b"x")
            acceptor.join()
            self._pending.cut_all()
            self._drain_ready()
            os.close(self._wake_read)
            os.close(self._wake_write)

    def cancel(self) -> None:
        """Stops ``serve()`` from any thread, whatever it is doing; it raises within a second."""
        self._ready.put(_CANCELLED)
        with self._lock:
            current = self._current
        if current is not None:
            _cut(current)

    def _serve_sessions(self) -> ReceiveResult:
        last_activity = time.monotonic()
        while True:
            transfer = self.transfer
            lingering = transfer is not None and transfer.committed is not None
            limit = self.timeouts.linger if lingering else self.timeouts.wait
            wait = None if limit is None else max(0.0, last_activity + limit - time.monotonic())
            try:
                item = self._ready.get(timeout=wait)
            except queue.Empty:
                if lingering:
                    return self._result()
                raise IdleTimeout(f"no sender connected within {limit} s") from None
            if item is _CANCELLED:
                raise TransferError("receive cancelled")
            assert isinstance(item, _Session)
            last_activity = time.monotonic()
            with self._lock:
                self._current = item.conn
            try:
                if self._serve_session(item):
                    return self._result()
            except (ProtocolError, ConnectionLost) as exc:
                log.warning("connection broken: %s", exc)
            finally:
                with self._lock:
                    self._current = None
                item.conn.close()
            last_activity = time.monotonic()

    def _result(self) -> ReceiveResult:
        transfer = self.transfer
        assert transfer is not None and transfer.committed is not None
        evidence, size = transfer.committed
        return ReceiveResult(evidence=evidence, bytes=size, wire_bytes=self.wire_bytes,
                             seconds=time.monotonic() - (self.started or time.monotonic()),
                             resumes=max(self.accepted - 1, 0), codec=transfer.codec,
                             refused=self.refused, resumed_bytes=transfer.resumed_bytes,
                             encrypted=transfer.encrypt, transfer_id=transfer.transfer_id)

    def _drain_ready(self) -> None:
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Session):
                item.conn.close()

    # ---- accepting and authenticating, concurrently --------------------------------------------

    def _accept_loop(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while not self._closing.is_set():
            events = poller.poll()
            if self._closing.is_set() or any(fd == self._wake_read for fd, _ in events):
                return
            if any(mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                   for _, mask in events):
                self._ready.put(_CANCELLED)  # the listener was shut down under us
                return
            try:
                conn, _ = self.listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.1)  # out of descriptors: the pending ones will free some
                continue
            self._pending.add(conn)
            threading.Thread(target=self._authenticate, args=(conn,),
                             name="ployz-receive-handshake", daemon=True).start()

    def _authenticate(self, conn: socket.socket) -> None:
        try:
            ready = self._handshake(conn)
        except (Refused, TicketRefused) as exc:
            with self._lock:
                self.refused += 1
            log.warning("connection refused: %s", exc)
            self._refuse(conn, exc)
            conn.close()
            return
        except (TransferError, OSError) as exc:
            log.warning("handshake failed: %s", exc)
            conn.close()
            return
        finally:
            self._pending.remove(conn)
        if self._closing.is_set():
            conn.close()
            return
        self._preempt(ready)
        self._ready.put(ready)

    def _preempt(self, ready: _Session) -> None:
        """A sender opens a new connection only after giving up its old one, which may linger
        half-open (a crashed process, a lost route): cut it, so that the new one (or the
        sender's ABORT) is served."""
        transfer = self.transfer
        with self._lock:
            current = self._current
        if current is not None and (transfer is None
                                    or ready.hello.get("transfer_id") == transfer.transfer_id):
            _cut(current)

    def _handshake(self, conn: socket.socket) -> _Session:
        ephemeral = session.Ephemeral()
        info_payload = p.send_control(conn, {"type": p.INFO, "protocol": p.PROTOCOL_VERSION,
                                             "target": self.sink.target.as_dict(),
                                             "kx": ephemeral.public_text})
        hello, hello_payload = p.recv_raw_control(conn, self.timeouts.handshake, (p.HELLO,))
        if hello.get("protocol") != p.PROTOCOL_VERSION:
            raise Refused("protocol", f"protocol {hello.get('protocol')!r} is not supported; "
                                      f"this receiver speaks {p.PROTOCOL_VERSION}")
        ticket, signer = verify_any(hello.get("ticket"), self.trusted)
        self._verify_proof(hello, info_payload, signer)
        shared = ephemeral.exchange(hello.get("kx"))
        encrypt = p.require(hello, "encrypt", bool)
        transcript = session.session_transcript(info_payload, hello_payload)
        keys = session.derive_keys(shared, self.secret, transcript, encrypt)
        ready = _Session(conn, p.Channel.for_receiver(conn, keys), hello, ticket,
                         p.require(hello, "stream", dict), transcript)
        abort = hello.get("abort")
        if abort is not None:
            ready.abort = str(abort)[:1000]
            self._check_ticket(ready)
            return ready
        self._check_transfer(ready)
        return ready

    def _verify_proof(self, hello: dict[str, Any], info_payload: bytes,
                      signer: Ed25519PublicKey) -> None:
        """The ticket alone is a bearer token that an on-path observer could replay; the proof
        shows that the sender holds the secret (or the signing key) and binds it to this
        connection's fresh keys."""
        mode = "secret" if self.secret is not None else "signature"
        if hello.get("auth") != mode:
            raise AuthenticationFailed(f"this receiver requires {mode} authentication; the "
                                       f"sender offered {hello.get('auth')!r}")
        transcript = session.hello_transcript(info_payload, hello)
        if self.secret is not None:
            session.verify_secret_proof(self.secret, hello.get("proof"), transcript)
        else:
            session.verify_hello_signature((signer,), hello.get("proof"), transcript)

    def _check_ticket(self, ready: _Session) -> str:
        """The ticket must be for the transfer the HELLO names, into this receiver's target;
        returns the transfer id."""
        transfer_id = p.require(ready.hello, "transfer_id", str)
        ticket = ready.ticket
        if ticket.transfer_id != transfer_id:
            raise TicketRefused(f"ticket is for transfer {ticket.transfer_id}, "
                                f"not {transfer_id}")
        if ticket.target != self.sink.target:
            raise TicketRefused(f"ticket names {ticket.target.kind} {ticket.target.name!r}; "
                                f"this receiver serves only {self.sink.target.name!r}")
        return transfer_id

    def _check_transfer(self, ready: _Session) -> None:
        hello = ready.hello
        transfer_id = self._check_ticket(ready)
        frame_size = p.require(hello, "frame_size", int)
        p.require(hello, "codecs", list)
        if not p.MIN_FRAME_SIZE <= frame_size <= p.MAX_FRAME_SIZE:
            raise Refused("frame_size", f"frame size {frame_size} outside "
                                        f"[{p.MIN_FRAME_SIZE}, {p.MAX_FRAME_SIZE}]")
        transfer = self.transfer
        if transfer is not None and (transfer.transfer_id != transfer_id
                                     or transfer.frame_size != frame_size):
            raise Refused("busy", f"this receiver is serving transfer {transfer.transfer_id}")

    def _refuse(self, conn: socket.socket, exc: Refused | TicketRefused) -> None:
        code = exc.code if isinstance(exc, Refused) else "ticket"
        message = exc.message if isinstance(exc, Refused) else str(exc)
        with contextlib.suppress(ConnectionLost):
            p.send_control(conn, {"type": p.REJECT, "code": code, "message": message})

    # ---- one authenticated connection ---------------------------------------------------------

    def _serve_session(self, ready: _Session) -> bool:
        """Serves one authenticated connection; True once the transfer is committed and the
        sender acknowledged it."""
        if ready.abort is not None:
            return self._aborted(ready)
        channel = ready.channel
        try:
            transfer = self._transfer_for(ready)
            resume = (ResumePoint(complete=True) if transfer.committed is not None
                      else self.sink.resume_point(self._stream(transfer).committed))
            if resume.held:
                transfer.resumed_bytes = resume.held
        except (Refused, TicketRefused) as exc:  # the sink found the stream unfit for it
            self.refused += 1
            code = exc.code if isinstance(exc, Refused) else "ticket"
            message = exc.message if isinstance(exc, Refused) else str(exc)
            with contextlib.suppress(ConnectionLost):
                channel.send({"type": p.REJECT, "code": code, "message": message})
            log.warning("connection refused: %s", exc)
            return False
        accept: dict[str, Any] = {"type": p.ACCEPT, "codec": transfer.codec,
                                  "resume": resume.as_dict(),
                                  "proof": session.sign_accept(self.key, ready.transcript)
                                  if self.key is not None else None}
        if transfer.committed is not None:  # a sender whose COMMIT was lost, back for it
            channel.send(accept)
            self.accepted += 1
            return self._send_commit(channel, *transfer.committed)
        stream = self._stream(transfer)
        channel.send(accept)
        self.accepted += 1
        if resume.complete:
            return self._commit(channel, transfer, stream)
        p.keep_alive(ready.conn)
        p.set_socket_timeouts(ready.conn, self.timeouts.idle)
        sink_fd = self.sink.open_run(stream.committed)
        wire_before = stream.wire_bytes
        transfer.encrypt = channel.encrypt  # each connection chooses; the last one is reported
        kind, err, message = stream.run(ready.conn.fileno(), sink_fd, channel.receiving_key,
                                        channel.encrypt)
        self.wire_bytes += stream.wire_bytes - wire_before
        ended = kind == 0 and stream.ended
        try:
            self.sink.close_run(ended, stream.committed)
        except TransferError as exc:
            self._fail(channel, exc)
            raise
        if not ended:
            error = (self._sink_error(message, err, ready.stream, stream.committed)
                     if kind == ERROR_KINDS["sink"] else
                     native_error(kind, message) if kind else ProtocolError("stream ended early"))
            self._fail(channel, error)
            if error.retryable or isinstance(error, ProtocolError):
                raise ConnectionLost(str(error)) from error
            raise error
        if stream.end_total != stream.committed or stream.end_chain != stream.chain_value:
            mismatch = StreamChecksumMismatch(
                f"whole-stream check failed: sender sent {stream.end_total} bytes with checksum "
                f"{stream.end_chain:016x}, receiver committed {stream.committed} bytes with "
                f"{stream.chain_value:016x}")
            self._fail(channel, mismatch)
            raise mismatch
        return self._commit(channel, transfer, stream)

    def _aborted(self, ready: _Session) -> bool:
        """An authenticated ABORT of the transfer served (or of the one its ticket names, before
        any data came) ends the receiver; once committed there is nothing left to abort."""
        transfer = self.transfer
        if transfer is not None and transfer.transfer_id != ready.hello.get("transfer_id"):
            log.warning("ignoring an abort of transfer %r", ready.hello.get("transfer_id"))
            return False
        if transfer is not None and transfer.committed is not None:
            return True
        raise TransferAborted(f"the sender gave the transfer up: {ready.abort}")

    def _transfer_for(self, ready: _Session) -> _Transfer:
        """The transfer this connection continues; the first one also prepares the sink."""
        transfer = self.transfer
        if transfer is None:
            hello = ready.hello
            codec = "zstd" if "zstd" in hello["codecs"] else "none"
            transfer = _Transfer(hello["transfer_id"], ready.ticket, hello["frame_size"], codec,
                                 bool(hello["encrypt"]), ready.stream)
            adopted = self.sink.begin(transfer.transfer_id, transfer.ticket, ready.stream,
                                      transfer.frame_size)
            transfer.stream = self._new_stream(transfer)
            if adopted:
                transfer.stream.adopt(self.sink.adopted_fd(), adopted)
            transfer.resumed_bytes = adopted
            with self._lock:
                self.transfer = transfer
            self.started = time.monotonic()
        elif not self.sink.restarts_stream and ready.stream != transfer.stream_info:
            # the one stream continues at the commit point: it must be the one begun
            raise Refused("stream", f"transfer {transfer.transfer_id} began as "
                                    f"{transfer.stream_info}; this connection sends "
                                    f"{ready.stream}")
        elif transfer.committed is None and self.sink.restarts_stream:
            transfer.stream = self._new_stream(transfer)
        return transfer

    def _commit(self, channel: p.Channel, transfer: _Transfer,
                stream: StreamReceiver) -> bool:
        try:
            evidence = self.sink.commit(stream.chain_value, stream.committed)
        except TransferError as exc:
            self._fail(channel, exc)
            raise
        transfer.committed = (evidence, stream.committed)
        if self._on_commit is not None:
            self._on_commit(self._result())
        return self._send_commit(channel, evidence, stream.committed)

    def _send_commit(self, channel: p.Channel, evidence: dict[str, Any], size: int) -> bool:
        """Sends the outcome and waits for the sender's ACK: without it the sender may never
        have learnt the outcome, and the receiver lingers for it to come back."""
        try:
            channel.send({"type": p.COMMIT, "evidence": evidence, "bytes": size})
            channel.recv(self.timeouts.ack, (p.ACK,))
        except TransferError as exc:
            log.warning("the sender did not acknowledge the commit (%s); lingering %.0f s for "
                        "it to come back", exc, self.timeouts.linger)
            return False
        return True

    @staticmethod
    def _sink_error(message: str, err: int, stream_info: dict[str, Any],
                    committed: int) -> SinkError:
        """A sink failure, saying what it takes to finish when the disk is full."""
        if err != errno.ENOSPC:
            return SinkError(message)
        size = stream_info.get("size")
        more = (f"about {size - committed} more bytes of free space are needed to finish"
                if isinstance(size, int) and size > committed else "more free space is needed")
        return SinkError(f"{message}; the partial result was cut back to its {committed} "
                         f"verified bytes; {more}")

    @staticmethod
    def _stream(transfer: _Transfer) -> StreamReceiver:
        assert transfer.stream is not None, "a transfer not committed has its stream"
        return transfer.stream

    def _new_stream(self, transfer: _Transfer) -> StreamReceiver:
        return StreamReceiver(transfer.frame_size, transfer.codec == "zstd", self.workers)

    def _fail(self, channel: p.Channel, exc: TransferError) -> None:
        """Tells the sender why its stream was cut (best effort) and lets it notice before the
        connection closes, so that it does not mistake a checksum failure for a network one."""
        conn = channel.sock
        try:
            channel.send({"type": p.FAILURE, "code": failure_code(exc), "message": str(exc)})
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
