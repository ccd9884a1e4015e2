"""The wire format: header layout, control messages, and agreement between the Python side and
the native data path on every constant."""

from __future__ import annotations

import json
import socket

import pytest

import ployz._xfer as native
from ployz.transfer import ChecksumMismatch, IdleTimeout, ProtocolError
from ployz.transfer import protocol as p


def test_python_and_native_agree_on_the_format() -> None:
    ours = (p.MAGIC, p.HEADER.size, p.END_PAYLOAD, p.MAX_FRAME_SIZE)
    assert ours == (native.MAGIC, native.HEADER_SIZE, native.END_PAYLOAD, native.MAX_FRAME)
    assert (native.FLAG_ZSTD, native.FLAG_END, native.FLAG_CONTROL) == (
        p.FLAG_ZSTD, p.FLAG_END, p.FLAG_CONTROL)
    assert p.MAGIC.to_bytes(4, "little") == b"PLZ1"


def test_header_round_trips_and_is_little_endian() -> None:
    header = p.Header(p.FLAG_ZSTD, 1234, 65536, 2**40 + 7, 0xDEADBEEFCAFEF00D)
    packed = header.pack()
    assert len(packed) == 32
    assert packed[:4] == b"PLZ1" and packed[8:12] == (1234).to_bytes(4, "little")
    assert p.Header.unpack(packed) == header


@pytest.mark.parametrize("mutate", [
    lambda b: b"XLZ1" + b[4:],
    lambda b: b[:6] + b"\x01\x00" + b[8:],
])
def test_header_with_bad_magic_or_reserved_bits_is_refused(mutate) -> None:
    with pytest.raises(ProtocolError):
        p.Header.unpack(mutate(p.Header(0, 1, 1, 0, 0).pack()))


def test_control_message_round_trips() -> None:
    message = {"type": p.HELLO, "protocol": 1, "codecs": ["zstd", "none"]}
    frame = p.encode_control(message)
    header = p.Header.unpack(frame[:32])
    assert header.flags == p.FLAG_CONTROL and header.wire_len == len(frame) - 32
    assert p.decode_control(header, frame[32:]) == message


def test_control_message_checksum_and_shape_are_checked() -> None:
    frame = p.encode_control({"type": p.INFO})
    header = p.Header.unpack(frame[:32])
    with pytest.raises(ChecksumMismatch):
        p.decode_control(header, frame[32:].replace(b"info", b"infx"))
    hostile = (b"[" * 60000, b'{"type": "x", "n": ' + b"9" * 5000 + b"}")
    for body in (b"[1, 2]", b"{\"no\": 1}", b"\xff\xfe", *hostile):
        bad = p.Header(p.FLAG_CONTROL, len(body), len(body), 0, native.frame_checksum(body, 0))
        with pytest.raises(ProtocolError):
            p.decode_control(bad, body)


def test_oversized_control_message_is_refused_both_ways() -> None:
    with pytest.raises(ProtocolError):
        p.encode_control({"type": "x", "pad": "a" * p.MAX_CONTROL})
    left, right = socket.socketpair()
    with left, right:
        left.sendall(p.Header(p.FLAG_CONTROL, p.MAX_CONTROL + 1, p.MAX_CONTROL + 1, 0, 0).pack())
        with pytest.raises(ProtocolError, match="exceeds"):
            p.recv_control(right, 1, (p.HELLO,))


def test_recv_control_checks_the_type_and_times_out() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(p.encode_control({"type": p.REJECT, "code": "x", "message": "y"}))
        with pytest.raises(ProtocolError, match="expected accept"):
            p.recv_control(right, 1, (p.ACCEPT,))
        left.sendall(p.encode_control({"type": p.ACCEPT})[:10])
        with pytest.raises(IdleTimeout):
            p.recv_control(right, 0.05, (p.ACCEPT,))


def test_require_rejects_missing_and_mistyped_fields() -> None:
    message = json.loads('{"type": "hello", "frame_size": true, "codecs": "zstd"}')
    with pytest.raises(ProtocolError):
        p.require(message, "frame_size", int)
    with pytest.raises(ProtocolError):
        p.require(message, "codecs", list)
    with pytest.raises(ProtocolError):
        p.require(message, "ticket", str)


def test_frame_checksum_is_seeded_with_the_offset() -> None:
    data = b"x" * 1000
    assert native.frame_checksum(data, 0) != native.frame_checksum(data, 1000)
    assert native.frame_checksum(data, 5) == native.frame_checksum(bytearray(data), 5)
