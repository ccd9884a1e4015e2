"""The wire format of ployz transfers, version 1 (documented in docs/protocol.md).

This module owns the format on the Python side: header layout, flags, limits and the control
messages of the handshake and the final acknowledgement. The data frames themselves are produced
and checked by the native data path (``ployz._xfer``), whose constants a unit test holds equal to
the ones here.

Conversation (the receiver speaks first)::

    receiver -> INFO     protocol version, the target it serves
    sender   -> HELLO    protocol version, ticket, transfer id, frame size, codecs, stream facts
    receiver -> ACCEPT   codec, resume point          (or REJECT: code, message; then close)
    sender   -> data frames ..., END (total bytes, whole-stream checksum)
    receiver -> COMMIT   what it committed            (or FAILURE: code, message)

Every message is a frame: a 32-byte header then a payload. Control frames carry a JSON object.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from ployz._xfer import frame_checksum
from ployz.transfer.errors import ChecksumMismatch, ConnectionLost, IdleTimeout, ProtocolError

PROTOCOL_VERSION = 1
MAGIC = 0x315A4C50  # b"PLZ1" as a little-endian u32
HEADER = struct.Struct("<IHHIIQQ")  # magic, flags, reserved, wire_len, raw_len, offset, checksum
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


@dataclass(frozen=True)
class Header:
    flags: int
    wire_len: int
    raw_len: int
    offset: int
    checksum: int

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.flags, 0, self.wire_len, self.raw_len, self.offset,
                           self.checksum)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        magic, flags, reserved, wire_len, raw_len, offset, checksum = HEADER.unpack(data)
        if magic != MAGIC:
            raise ProtocolError(f"bad magic {magic:#010x}: not a ployz transfer peer")
        if reserved:
            raise ProtocolError("reserved header bits set")
        return cls(flags, wire_len, raw_len, offset, checksum)


def encode_control(message: dict[str, Any]) -> bytes:
    """A control frame: header plus a compact JSON object with a ``type`` key."""
    payload = json.dumps(message, separators=(",", ":"), sort_keys=True).encode()
    if len(payload) > MAX_CONTROL:
        raise ProtocolError(f"control message of {len(payload)} bytes exceeds {MAX_CONTROL}")
    header = Header(FLAG_CONTROL, len(payload), len(payload), 0, frame_checksum(payload, 0))
    return header.pack() + payload


def decode_control(header: Header, payload: bytes) -> dict[str, Any]:
    if frame_checksum(payload, 0) != header.checksum:
        raise ChecksumMismatch("control message failed its checksum")
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd nesting or digits
        raise ProtocolError(f"control message is not acceptable JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("control message is not an object with a type")
    return message


def send_control(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.sendall(encode_control(message))
    except OSError as exc:
        raise ConnectionLost(f"sending {message.get('type')}: {exc}") from exc


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


def recv_control(sock: socket.socket, timeout: float, expect: tuple[str, ...]) -> dict[str, Any]:
    """Reads one control message of one of the ``expect``ed types within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    header = Header.unpack(_recv_exact(sock, HEADER.size, deadline, "a message header"))
    if header.flags != FLAG_CONTROL or header.wire_len != header.raw_len:
        raise ProtocolError(f"expected a control message ({'/'.join(expect)}), "
                            f"got a frame with flags {header.flags:#x}")
    if header.wire_len > MAX_CONTROL:
        raise ProtocolError(f"control message of {header.wire_len} bytes exceeds {MAX_CONTROL}")
    message = decode_control(header, _recv_exact(sock, header.wire_len, deadline, "a message"))
    if message["type"] not in expect:
        raise ProtocolError(f"expected {'/'.join(expect)}, got {message['type']!r}")
    return message


def require(message: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
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
