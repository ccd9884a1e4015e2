"""The sending end: connects, presents a ticket and a proof bound to the connection's fresh
keys, streams from the receiver's resume point, and reconnects after a broken connection
(bounded attempts, exponential backoff) until the receiver acknowledges the commit. It reports
success only for a COMMIT that passed its tag and whose evidence matches what it sent; when it
gives up it tells the receiver (ABORT), so that neither end waits for the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ployz._xfer import STOPPED, RateLimit, StreamSender
from ployz.transfer import protocol as p
from ployz.transfer import session
from ployz.transfer.addresses import format_address
from ployz.transfer.endpoints import ResumePoint, Source
from ployz.transfer.errors import (
    AuthenticationFailed,
    ConnectionLost,
    ProtocolError,
    Refused,
    RetriesExhausted,
    TicketRefused,
    TransferError,
    native_error,
)
from ployz.transfer.faults import failure_from
from ployz.transfer.progress import ProgressCallback, ProgressMeter
from ployz.transfer.results import SendResult
from ployz.transfer.tickets import Target, Ticket, sign

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8  # connections in a row that move the commit point no further
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    multiplier: float = 2.0

    def backoff(self, failures: int) -> float:
        return min(self.initial_backoff * self.multiplier ** (failures - 1), self.max_backoff)


@dataclass(frozen=True)
class SenderTimeouts:
    connect: float = 10.0
    handshake: float = 10.0
    idle: float = 60.0
    commit: float = 600.0  # for the receiver to commit after the end frame (zfs receive)


class Sender:
    """Sends one source to the receiver at ``address``. Authorisation is either a ready
    ``ticket`` (issued by an orchestrator) with the transfer's ``secret``, which the orchestrator
    gave the receiver too, or a signing ``key``: then the sender issues itself a short-lived
    ticket for the target the receiver announces, which the receiver accepts only if it trusts
    that key, and proves it holds the key. ``encrypt`` hides the stream from the path as well
    (for links outside the WireGuard overlay). ``receiver_key``: the receiver must prove it
    holds that key (with a secret the receiver proves itself by knowing it). ``bwlimit`` caps
    this send alone; ``shared_limit`` instead caps it together with the other sends given the
    same limit."""

    def __init__(self, source: Source, address: tuple[str, int], *,
                 key: Ed25519PrivateKey | None = None, ticket: str | None = None,
                 secret: bytes | None = None, encrypt: bool = False,
                 receiver_key: Ed25519PublicKey | None = None,
                 transfer_id: str | None = None, codec: str = "auto",
                 frame_size: int = p.DEFAULT_FRAME_SIZE, level: int = 1, workers: int = 2,
                 bwlimit: float = 0.0, shared_limit: RateLimit | None = None,
                 retry: RetryPolicy | None = None,
                 timeouts: SenderTimeouts | None = None, ticket_ttl: float = 600.0,
                 progress: ProgressCallback | None = None,
                 progress_interval: float = 0.25) -> None:
        if (key is None) == (ticket is None):
            raise ValueError("give exactly one of a signing key or a ticket")
        if ticket is not None and secret is None:
            raise ValueError("a sender with a ticket needs the transfer's secret to prove itself")
        if codec not in ("auto", *p.CODECS):
            raise ValueError(f"unknown codec {codec!r}; expected auto, zstd or none")
        if not p.MIN_FRAME_SIZE <= frame_size <= p.MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be within [{p.MIN_FRAME_SIZE}, "
                             f"{p.MAX_FRAME_SIZE}]")
        self.source = source
        self.address = address
        self.key = key
        self.ticket = ticket
        self.secret = secret
        self.encrypt = encrypt
        self.receiver_key = receiver_key
        self.receiver_verified = False
        self.resumed_bytes: int | None = None
        self.transfer_id = transfer_id or str(uuid.uuid4())
        self.codec = codec
        self.frame_size = frame_size
        self.level = level
        self.workers = workers
        self.bwlimit = bwlimit
        self.shared_limit = shared_limit
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or SenderTimeouts()
        self.ticket_ttl = ticket_ttl
        self.progress = progress
        self.progress_interval = progress_interval
        self.stream: StreamSender | None = None
        self.negotiated: str | None = None
        self.accepted = 0
        self.notices: list[str] = []
        self.committed_mark = -1  # where the receiver's commit point stood at the last accept

    def send(self) -> SendResult:
        started = time.monotonic()
        meter = ProgressMeter(self.source.estimated_size())
        failures = 0
        while True:
            mark = self.committed_mark
            try:
                evidence, size = self._attempt(meter)
                break
            except TransferError as exc:
                # attempts count since the receiver last committed more: a long transfer over
                # a link that keeps breaking goes on as long as every connection moves it on
                failures = 1 if self.committed_mark > mark >= 0 else failures + 1
                if not exc.retryable:
                    self._abort(str(exc))
                    raise
                if failures >= self.retry.attempts:
                    self._abort(f"gave up after {failures} attempts: {exc}")
                    raise RetriesExhausted(
                        f"gave up after {failures} attempts; last error: {exc}") from exc
                delay = self.retry.backoff(failures)
                log.warning("attempt %d failed (%s); retrying in %.1f s", failures, exc, delay)
                time.sleep(delay)
        stream = self.stream
        assert stream is not None and self.negotiated is not None
        if self.progress:
            self.progress(meter.sample(size, stream.wire_bytes, finished=True))
        return SendResult(evidence=evidence, bytes=size, wire_bytes=stream.wire_bytes,
                          seconds=time.monotonic() - started, resumes=max(self.accepted - 1, 0),
                          codec=self._codec_label(), frames_zstd=stream.frames_zstd,
                          frames_raw=stream.frames_raw, frames_spliced=stream.frames_spliced,
                          notices=tuple(self.notices), resumed_bytes=self.resumed_bytes or 0,
                          encrypted=self.encrypt, receiver_verified=self.receiver_verified,
                          transfer_id=self.transfer_id)

    def _abort(self, reason: str) -> None:
        """Tells the receiver, on a connection of its own, that this transfer is given up, so
        that it stops waiting for a sender that will not come back. Best effort: a receiver out
        of reach learns it from its own wait running out."""
        if self.accepted == 0:
            return  # no receiver ever took this transfer: there is nothing waiting for it
        try:
            sock = self._connect()
        except TransferError:
            return
        with sock, contextlib.suppress(TransferError, OSError):
            self._hello(sock, abort=reason)

    def _codec_label(self) -> str:
        return self.negotiated if self.negotiated == "none" else self.codec

    def _ticket_for(self, target: Target) -> str:
        if self.ticket is not None:
            return self.ticket
        assert self.key is not None
        info = self.source.stream_info()
        ticket = Ticket(self.transfer_id, target, time.time() + self.ticket_ttl,
                        info.get("toguid"), info.get("fromguid"))
        return sign(ticket, self.key)

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeouts.connect)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {format_address(*self.address)}: "
                                 f"{exc}") from exc
        sock.settimeout(None)  # back to blocking: the data path needs a blocking socket
        return sock

    def _hello(self, sock: socket.socket, abort: str | None = None) -> tuple[p.Channel, bytes]:
        """The handshake up to the session keys: INFO in, HELLO out. Returns the connection's
        sealed channel and the session transcript (what the receiver's proof covers)."""
        info, info_payload = p.recv_raw_control(sock, self.timeouts.handshake, (p.INFO,))
        if info.get("protocol") != p.PROTOCOL_VERSION:
            raise ProtocolError(f"receiver speaks protocol {info.get('protocol')!r}, "
                                f"this sender {p.PROTOCOL_VERSION}")
        try:
            target = Target.from_dict(info.get("target"))
        except TicketRefused:
            raise ProtocolError("receiver announced a malformed target") from None
        ephemeral = session.Ephemeral()
        shared = ephemeral.exchange(info.get("kx"))
        codecs = ["none"] if self.codec == "none" else ["zstd", "none"]
        hello: dict[str, Any] = {
            "type": p.HELLO, "protocol": p.PROTOCOL_VERSION, "ticket": self._ticket_for(target),
            "transfer_id": self.transfer_id, "frame_size": self.frame_size, "codecs": codecs,
            "stream": self.source.stream_info(), "kx": ephemeral.public_text,
            "encrypt": self.encrypt, "auth": "secret" if self.secret is not None else "signature"}
        if abort is not None:
            hello["abort"] = abort[:1000]
        proof_of = session.hello_transcript(info_payload, hello)
        if self.secret is not None:
            hello["proof"] = session.secret_proof(self.secret, proof_of)
        else:
            assert self.key is not None
            hello["proof"] = session.sign_hello(self.key, proof_of)
        hello_payload = p.send_control(sock, hello)
        transcript = session.session_transcript(info_payload, hello_payload)
        keys = session.derive_keys(shared, self.secret, transcript, self.encrypt)
        return p.Channel.for_sender(sock, keys), transcript

    def _handshake(self, sock: socket.socket) -> tuple[p.Channel, ResumePoint]:
        channel, transcript = self._hello(sock)
        reply = channel.recv_reply(self.timeouts.handshake, (p.ACCEPT, p.REJECT), (p.REJECT,))
        if reply["type"] == p.REJECT:
            raise Refused(str(reply.get("code")), str(reply.get("message"))[:1000])
        self._check_receiver(reply, transcript)
        codec = p.require(reply, "codec", str)
        resume = p.require(reply, "resume", dict)
        if codec not in p.CODECS or (codec == "zstd" and self.codec == "none"):
            raise ProtocolError(f"receiver chose codec {codec!r}, which was not offered")
        offset, token = resume.get("offset"), resume.get("token")
        if not isinstance(offset, int) or offset < 0 or not isinstance(token, str | None):
            raise ProtocolError("receiver sent a malformed resume point")
        listed = resume.get("notices") or []
        if not isinstance(listed, list):
            raise ProtocolError("receiver sent a malformed resume point (notices)")
        notices = tuple(str(n) for n in listed)
        for notice in notices:
            log.warning("receiver: %s", notice)
        self.notices += notices
        self._ensure_stream(codec)
        self.accepted += 1
        return channel, ResumePoint(offset, token, notices, complete=resume.get("complete") is True)

    def _check_receiver(self, accept: dict[str, Any], transcript: bytes) -> None:
        """With a secret, the sealed ACCEPT already proves the receiver; with a key, only its
        signature over this session does."""
        if self.secret is not None:
            self.receiver_verified = True
            return
        proof = accept.get("proof")
        if self.receiver_key is not None:
            session.verify_accept_signature(self.receiver_key, proof, transcript)
            self.receiver_verified = True
        elif proof is not None and self.key is not None:
            # a receiver proving, unasked, the key this sender holds is verified; one proving
            # another key is merely not verified, since no key was asked of it
            with contextlib.suppress(AuthenticationFailed):
                session.verify_accept_signature(self.key.public_key(), proof, transcript)
                self.receiver_verified = True

    def _ensure_stream(self, codec: str) -> None:
        if self.stream is None:
            self.negotiated = codec
            local = self.codec if codec == "zstd" else "none"
            self.stream = StreamSender(self.frame_size, local, self.level, self.workers,
                                       self.bwlimit, self.shared_limit)
        elif codec != self.negotiated:
            raise ProtocolError(f"receiver switched codec from {self.negotiated} to {codec}")

    def _attempt(self, meter: ProgressMeter) -> tuple[dict[str, Any], int]:
        sock = self._connect()
        try:
            channel, resume = self._handshake(sock)
            stream = self.stream
            assert stream is not None
            if resume.complete:  # the target already holds this stream: nothing to send
                evidence, size = self._await_commit(channel, None)
                if self.resumed_bytes is None:
                    self.resumed_bytes = size
                return evidence, size
            with self.source.open(resume, stream.stop) as run:
                self.committed_mark = run.done_before + run.offset
                if self.resumed_bytes is None:  # what the receiver held before this sender
                    self.resumed_bytes = self.committed_mark
                if run.seekable and run.offset > stream.known_bytes:
                    stream.adopt(run.fd, run.offset)
                elif not run.seekable and run.offset == 0:
                    stream.restart()
                p.keep_alive(sock)
                p.set_socket_timeouts(sock, self.timeouts.idle)
                watcher = _Watcher(sock, stream, run.done_before, meter, self.progress,
                                   self.progress_interval)
                watcher.start()
                try:
                    kind, _errno, message = stream.run(run.fd, sock.fileno(), run.offset,
                                                       channel.sending_key, self.encrypt)
                finally:
                    watcher.finish()
                # raised inside the block, so that the source knows the run failed
                if kind == STOPPED:
                    raise self._receiver_reason(channel) or ConnectionLost(
                        "the receiver closed the connection during the data phase")
                if kind:
                    raise self._receiver_reason(channel) or native_error(kind, message)
            evidence, size = self._await_commit(channel, stream)
            return evidence, run.done_before + size
        finally:
            sock.close()

    def _await_commit(self, channel: p.Channel,
                      sent: StreamSender | None) -> tuple[dict[str, Any], int]:
        """The receiver's outcome, checked against what this connection sent (``sent``; None
        when the receiver already held the stream), then acknowledged."""
        reply = channel.recv(self.timeouts.commit, (p.COMMIT, p.FAILURE))
        if reply["type"] == p.FAILURE:
            raise failure_from(reply.get("code"), reply.get("message"))
        evidence, size = p.require(reply, "evidence", dict), p.require(reply, "bytes", int)
        self._check_evidence(evidence, size, sent)
        with contextlib.suppress(TransferError):
            channel.send({"type": p.ACK})
        return evidence, size

    def _check_evidence(self, evidence: dict[str, Any], size: int,
                        sent: StreamSender | None) -> None:
        """A receiver that committed something other than this stream must not pass for
        success: its size and checksum must be those sent, a ZFS snapshot's guid the one sent."""
        info = self.source.stream_info()
        if evidence.get("kind") != info.get("kind"):
            raise ProtocolError(f"receiver committed a {evidence.get('kind')!r}, "
                                f"not the {info.get('kind')} sent")
        if info.get("toguid") is not None and evidence.get("guid") != info["toguid"]:
            raise ProtocolError(f"receiver committed snapshot guid {evidence.get('guid')!r}, "
                                f"not the {info['toguid']} sent")
        if info.get("kind") == "file" and size != info.get("size"):
            raise ProtocolError(f"receiver committed {size} bytes of a {info.get('size')}-byte "
                                f"file")
        if sent is not None and (size != sent.raw_bytes
                                 or evidence.get("checksum") != f"{sent.chain:016x}"):
            raise ProtocolError(f"receiver committed {size} bytes with checksum "
                                f"{evidence.get('checksum')}; sent {sent.raw_bytes} bytes with "
                                f"{sent.chain:016x}")

    def _receiver_reason(self, channel: p.Channel) -> TransferError | None:
        """After the data phase broke: the receiver's FAILURE message, if it sent one."""
        try:
            reply = channel.recv(1.0, (p.FAILURE,))
        except TransferError:
            return None
        return failure_from(reply.get("code"), reply.get("message"))


class _Watcher(threading.Thread):
    """Runs beside the data path: reports progress, and stops the stream as soon as the
    receiver says anything (during the data phase that can only be a FAILURE or a close), so
    that the sender does not keep pushing frames into a dead stream. It leaves the socket open:
    what it heard may be the COMMIT of a run that has just ended, which the ACK must follow."""

    def __init__(self, sock: socket.socket, stream: StreamSender, done_before: int,
                 meter: ProgressMeter, progress: ProgressCallback | None,
                 interval: float) -> None:
        super().__init__(name="ployz-transfer-watch", daemon=True)
        self.sock, self.stream, self.meter = sock, stream, meter
        self.done_before = done_before
        self.progress, self.interval = progress, interval
        self.done = threading.Event()
        self.wake_read, self.wake_write = os.pipe()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLRDHUP)
        poller.register(self.wake_read, select.POLLIN)
        while not self.done.is_set():
            if poller.poll(self.interval * 1000) and not self.done.is_set():
                self.stream.stop()
                return
            if self.progress:
                done = self.done_before + self.stream.raw_bytes
                self.progress(self.meter.sample(done, self.stream.wire_bytes))

    def finish(self) -> None:
        self.done.set()
        os.write(self.wake_write, b"x")
        self.join()
        os.close(self.wake_read)
        os.close(self.wake_write)
