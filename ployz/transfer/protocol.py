"""The wire format of ployz transfers, version 2 (documented in docs/protocol.md).

This module owns the format on the Python side: header layout, flags, limits and the control
messages of the handshake and the final acknowledgement. The data frames themselves are produced
and checked by the native data path (``ployz._xfer``), whose constants a unit test holds equal to
the ones here.

Conversation (the receiver speaks first)::

    receiver -> INFO     protocol version, the target it serves, its ephemeral X25519 key
    sender   -> HELLO    ticket, transfer id, frame size, codecs, stream facts, its ephemeral
                         key, whether to encrypt, and its proof over both messages
    receiver -> ACCEPT   codec, resume point          (or REJECT: code, message; then close)
    sender   -> data frames ..., END (total bytes, whole-stream checksum)
    receiver -> COMMIT   what it committed            (or FAILURE: code, message)
    sender   -> ACK      it verified the COMMIT

A sender that gives a transfer up says so in a HELLO of a connection of its own that carries
``abort``; it gets no answer.

Every message is a frame: a 48-byte header then a payload. Control frames carry a JSON object.
From ACCEPT on every frame is sealed with the session keys (``ployz.transfer.session``): a
:class:`Channel` seals the control messages, the native data path the data frames.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from ployz._xfer import frame_checksum
from ployz.transfer.errors import ChecksumMismatch, ConnectionLost, IdleTimeout, ProtocolError
from ployz.transfer.session import KIND_CONTROL, TAG_SIZE, Sealer, SessionKeys

_T = TypeVar("_T")

PROTOCOL_VERSION = 2
MAGIC = 0x325A4C50  # b"PLZ2" as a little-endian u32
# magic, flags, reserved, wire_len, raw_len, offset, checksum: what the tag authenticates
AAD = struct.Struct("<IHHIIQQ")
HEADER_SIZE = AAD.size + TAG_SIZE
UNSEALED = bytes(TAG_SIZE)  # the tag of the handshake messages, sent before keys exist
FLAG_ZSTD = 0x1
FLAG_END = 0x2
FLAG_CONTROL = 0x4
END_PAYLOAD = 16  # u64 total bytes, u64 whole-stream checksum
MAX_CONTROL = 64 * 1024
MIN_FRAME_SIZE = 64 * 1024
MAX_FRAME_SIZE = 8 * 1024 * 1024
# per-frame costs (a header, a checksum, the splices and tees) are paid 4x less often than with
# 1 MiB frames, which weighs where syscalls are dear (ZFS under emulation: 0.88x -> 0.98x of
# the local pipe); on the host the two measure level (bench/results/NOTES.md)
DEFAULT_FRAME_SIZE = 4 * 1024 * 1024
CODECS = ("none", "zstd")

# Message types.
INFO = "info"
HELLO = "hello"
ACCEPT = "accept"
REJECT = "reject"
COMMIT = "commit"
FAILURE = "failure"
ACK = "ack"


@dataclass(frozen=True)
class Header:
    flags: int
    wire_len: int
    raw_len: int
    offset: int
    checksum: int
    tag: bytes = UNSEALED

    def authenticated(self) -> bytes:
        """The header bytes a frame's tag covers: all of it but the tag."""
        return AAD.pack(MAGIC, self.flags, 0, self.wire_len, self.raw_len, self.offset,
                        self.checksum)

    def pack(self) -> bytes:
        return self.authenticated() + self.tag

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        magic, flags, reserved, wire_len, raw_len, offset, checksum = AAD.unpack(data[:AAD.size])
        if magic != MAGIC:
            raise ProtocolError(f"bad magic {magic:#010x}: not a ployz transfer peer "
                                f"of protocol {PROTOCOL_VERSION}")
        if reserved:
            raise ProtocolError("reserved header bits set")
        return cls(flags, wire_len, raw_len, offset, checksum, bytes(data[AAD.size:]))


def _json_payload(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":"), sort_keys=True).encode()
    if len(payload) > MAX_CONTROL:
        raise ProtocolError(f"control message of {len(payload)} bytes exceeds {MAX_CONTROL}")
    return payload


def encode_control(message: dict[str, Any], sealer: Sealer | None = None,
                   sequence: int = 0) -> bytes:
    """A control frame: header plus a compact JSON object with a ``type`` key, sealed as the
    ``sequence``-th control message of its direction when a ``sealer`` is given. A sealed frame
    of an encrypted session carries no checksum (it would hash the plaintext in the clear)."""
    payload = _json_payload(message)
    if sealer is None:
        return Header(FLAG_CONTROL, len(payload), len(payload), 0,
                      frame_checksum(payload, 0)).pack() + payload
    checksum = 0 if sealer.encrypt else frame_checksum(payload, sequence)
    header = Header(FLAG_CONTROL, len(payload), len(payload), sequence, checksum)
    wire, tag = sealer.seal(header.authenticated(), payload, KIND_CONTROL, sequence)
    return Header(FLAG_CONTROL, len(payload), len(payload), sequence, checksum, tag).pack() + wire


def parse_control(payload: bytes) -> dict[str, Any]:
    """A control message's JSON object; peers are untrusted, so anything else is refused."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd nesting or digits
        raise ProtocolError(f"control message is not acceptable JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("control message is not an object with a type")
    return message


def check_control_header(header: Header, expect: tuple[str, ...], sequence: int) -> None:
    """What a control frame's header must say before its payload is read: each rule has its
    own message, so that a damaged length is not reported as a wrong kind of frame."""
    wanted = "/".join(expect)
    if header.flags & ~(FLAG_ZSTD | FLAG_END | FLAG_CONTROL):
        raise ProtocolError(f"expected a control message ({wanted}); the header has unknown "
                            f"flags {header.flags:#x}")
    if header.flags != FLAG_CONTROL:
        raise ProtocolError(f"expected a control message ({wanted}), got a data frame "
                            f"(flags {header.flags:#x}, offset {header.offset})")
    if header.wire_len != header.raw_len:
        raise ProtocolError(f"control message ({wanted}) whose wire length {header.wire_len} "
                            f"differs from its length {header.raw_len}")
    if header.wire_len > MAX_CONTROL:
        raise ProtocolError(f"control message of {header.wire_len} bytes exceeds {MAX_CONTROL}")
    if header.offset != sequence:
        raise ProtocolError(f"control message ({wanted}) numbered {header.offset}, expected "
                            f"{sequence}: a message was lost, replayed or reordered")


def decode_control(header: Header, payload: bytes) -> dict[str, Any]:
    """An unsealed control message (the handshake): only its checksum guards it, and what it
    says is bound to the session afterwards by the transcript that both sides hash."""
    if frame_checksum(payload, 0) != header.checksum:
        raise ChecksumMismatch("control message failed its checksum")
    return parse_control(payload)


def send_control(sock: socket.socket, message: dict[str, Any]) -> bytes:
    """Sends an unsealed handshake message (INFO, HELLO, an early REJECT); returns its payload,
    which the session transcript hashes."""
    frame = encode_control(message)
    try:
        sock.sendall(frame)
    except OSError as exc:
        raise ConnectionLost(f"sending {message.get('type')}: {exc}") from exc
    return frame[HEADER_SIZE:]


def _recv_exact(sock: socket.socket, size: int, deadline: float, what: str) -> bytes:
    """Reads exactly ``size`` bytes before ``deadline`` (monotonic). Uses poll rather than
    ``settimeout``, which would make the socket non-blocking and break splice on it."""
    chunks: list[bytes] = []
    remaining = size
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not poller.poll(wait * 1000):
            raise IdleTimeout(f"timed out waiting for {what}")
        try:
            chunk = sock.recv(remaining, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise ConnectionLost(f"connection failed while reading {what}: {exc}") from exc
        if not chunk:
            raise ConnectionLost(f"connection closed while reading {what}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_raw_control(sock: socket.socket, timeout: float,
                     expect: tuple[str, ...]) -> tuple[dict[str, Any], bytes]:
    """Reads one unsealed handshake message of an ``expect``ed type within ``timeout`` seconds;
    returns it with its payload bytes, which the session transcript hashes as received."""
    deadline = time.monotonic() + timeout
    header = Header.unpack(_recv_exact(sock, HEADER_SIZE, deadline, "a message header"))
    check_control_header(header, expect, 0)
    if header.tag != UNSEALED:
        raise ProtocolError(f"expected an unsealed handshake message ({'/'.join(expect)})")
    payload = _recv_exact(sock, header.wire_len, deadline, "a message")
    message = decode_control(header, payload)
    _check_type(message, expect)
    return message, payload


def recv_control(sock: socket.socket, timeout: float, expect: tuple[str, ...]) -> dict[str, Any]:
    """Reads one unsealed handshake message of an ``expect``ed type."""
    return recv_raw_control(sock, timeout, expect)[0]


def _check_type(message: dict[str, Any], expect: tuple[str, ...]) -> None:
    if message["type"] not in expect:
        raise ProtocolError(f"expected {'/'.join(expect)}, got {message['type']!r}")


class Channel:
    """The control messages of one connection once its session keys exist: each direction
    seals with its own key and numbers its messages, so that one altered, dropped, replayed or
    reflected message fails its tag or its number. The data frames in between are the native
    data path's; they use other nonces under the same keys."""

    def __init__(self, sock: socket.socket, keys: SessionKeys, sending: bytes,
                 receiving: bytes) -> None:
        self.sock = sock
        self.encrypt = keys.encrypt
        self.sending_key = sending  # what the native data path seals this side's frames with
        self.receiving_key = receiving  # and checks the peer's with
        self._out = Sealer(sending, keys.encrypt)
        self._in = Sealer(receiving, keys.encrypt)
        self._sent = 0
        self._received = 0

    @classmethod
    def for_sender(cls, sock: socket.socket, keys: SessionKeys) -> Channel:
        return cls(sock, keys, keys.sender, keys.receiver)

    @classmethod
    def for_receiver(cls, sock: socket.socket, keys: SessionKeys) -> Channel:
        return cls(sock, keys, keys.receiver, keys.sender)

    def send(self, message: dict[str, Any]) -> None:
        frame = encode_control(message, self._out, self._sent)
        self._sent += 1
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            raise ConnectionLost(f"sending {message.get('type')}: {exc}") from exc

    def recv(self, timeout: float, expect: tuple[str, ...]) -> dict[str, Any]:
        """Reads the next sealed control message of an ``expect``ed type within ``timeout``."""
        return self.recv_reply(timeout, expect, ())

    def recv_reply(self, timeout: float, expect: tuple[str, ...],
                   unsealed: tuple[str, ...]) -> dict[str, Any]:
        """As ``recv``, but also takes an unsealed message of an ``unsealed`` type: a REJECT
        that the peer sent before it had keys. Anyone on the path can forge one; all it can do
        is end the transfer, which cutting the connection does as well."""
        deadline = time.monotonic() + timeout
        header = Header.unpack(_recv_exact(self.sock, HEADER_SIZE, deadline,
                                           "a message header"))
        if unsealed and header.tag == UNSEALED and header.offset == 0:
            check_control_header(header, unsealed, 0)
            message = decode_control(header, _recv_exact(self.sock, header.wire_len, deadline,
                                                         "a message"))
            _check_type(message, unsealed)
            return message
        check_control_header(header, expect, self._received)
        payload = _recv_exact(self.sock, header.wire_len, deadline, "a message")
        plain = self._in.open(header.authenticated(), payload, header.tag, KIND_CONTROL,
                              header.offset)
        self._received += 1
        if not self.encrypt and frame_checksum(plain, header.offset) != header.checksum:
            raise ChecksumMismatch("control message failed its checksum")
        message = parse_control(plain)
        _check_type(message, expect)
        return message


def require(message: dict[str, Any], key: str, kind: type[_T]) -> _T:
    """A field of a peer's message, type-checked: peers are untrusted input."""
    value = message.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{message.get('type')} message: field {key!r} missing or invalid")
    return value


def set_socket_timeouts(sock: socket.socket, seconds: float) -> None:
    """Idle timeouts for the data phase as SO_RCVTIMEO/SO_SNDTIMEO, which keep the socket
    blocking (the native loop and splice need that); a stalled peer then fails a read or write
    with EAGAIN, reported as an idle timeout."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def keep_alive(sock: socket.socket) -> None:
    """TCP keepalive for the data phase, so that a peer that vanished without a word (a crash
    of its machine, a lost route) is noticed in about half a minute even when no byte is due."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
