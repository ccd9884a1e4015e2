"""Framing of the agent protocol: one JSON object per frame, prefixed by its length.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. Requests and
responses alternate on a connection; a client may send many requests over one connection. The
envelope of a request and its signature are defined in :mod:`ployz.agent.auth`; a response is
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code", "message",
"details"}}``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from ployz.agent.errors import ProtocolViolation

MAX_FRAME_BYTES = 16 * 1024 * 1024
IDENTIFY = "agent.identify"
"""The one method answered without a signature: it returns the agent's machine id."""
_HEADER = struct.Struct(">I")


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolViolation(f"message of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolViolation(f"frame is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolViolation("frame is not a JSON object")
    return message


def _checked_length(header: bytes) -> int:
    length: int
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolViolation(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return length


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the peer closed the connection between frames."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolViolation("connection closed inside a frame header") from exc
        return None
    try:
        body = await reader.readexactly(_checked_length(header))
    except asyncio.IncompleteReadError as exc:
        raise ProtocolViolation("connection closed inside a frame") from exc
    return decode_body(body)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ConnectionResetError("connection closed by the agent")
        chunks += chunk
    return bytes(chunks)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    """Blocking read of the next message (the client side)."""
    length = _checked_length(_recv_exactly(sock, _HEADER.size))
    return decode_body(_recv_exactly(sock, length))

