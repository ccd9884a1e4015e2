"""The wire format: header layout, control messages, and agreement between the Python side and
the native data path on every constant."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

import ployz._xfer as native
from ployz.transfer import protocol as p
from ployz.transfer.errors import ChecksumMismatch, IdleTimeout, IntegrityError, ProtocolError
from ployz.transfer.session import (
    KEY_SIZE,
    KIND_DATA,
    KIND_END,
    TAG_SIZE,
    Sealer,
    SessionKeys,
)

KEYS = SessionKeys(bytes(range(32)), bytes(range(32, 64)), encrypt=False)


def test_python_and_native_agree_on_the_format() -> None:
    ours = (p.MAGIC, p.HEADER_SIZE, p.AAD.size, p.END_PAYLOAD, p.MAX_FRAME_SIZE)
    assert ours == (native.MAGIC, native.HEADER_SIZE, native.AAD_SIZE, native.END_PAYLOAD,
                    native.MAX_FRAME)
    assert (native.FLAG_ZSTD, native.FLAG_END, native.FLAG_CONTROL) == (
        p.FLAG_ZSTD, p.FLAG_END, p.FLAG_CONTROL)
    assert (native.NONCE_DATA, native.NONCE_END, native.TAG_SIZE, native.KEY_SIZE) == (
        KIND_DATA, KIND_END, TAG_SIZE, KEY_SIZE)
    assert p.MAGIC.to_bytes(4, "little") == b"PLZ2"


def test_header_round_trips_and_is_little_endian() -> None:
    header = p.Header(p.FLAG_ZSTD, 1234, 65536, 2**40 + 7, 0xDEADBEEFCAFEF00D, b"t" * 16)
    packed = header.pack()
    assert len(packed) == 48
    assert packed[:4] == b"PLZ2" and packed[8:12] == (1234).to_bytes(4, "little")
    assert packed[32:] == b"t" * 16
    assert p.Header.unpack(packed) == header


@pytest.mark.parametrize("mutate", [
    lambda b: b"XLZ2" + b[4:],
    lambda b: b[:6] + b"\x01\x00" + b[8:],
])
def test_header_with_bad_magic_or_reserved_bits_is_refused(mutate) -> None:
    with pytest.raises(ProtocolError):
        p.Header.unpack(mutate(p.Header(0, 1, 1, 0, 0).pack()))


def test_control_message_round_trips() -> None:
    message = {"type": p.HELLO, "protocol": 1, "codecs": ["zstd", "none"]}
    frame = p.encode_control(message)
    header = p.Header.unpack(frame[:48])
    assert header.flags == p.FLAG_CONTROL and header.wire_len == len(frame) - 48
    assert header.tag == p.UNSEALED
    assert p.decode_control(header, frame[48:]) == message


def test_control_message_checksum_and_shape_are_checked() -> None:
    frame = p.encode_control({"type": p.INFO})
    header = p.Header.unpack(frame[:48])
    with pytest.raises(ChecksumMismatch):
        p.decode_control(header, frame[48:].replace(b"info", b"infx"))
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


def _read_frame(sock: socket.socket) -> tuple[p.Header, bytes]:
    header = p.Header.unpack(p._recv_exact(sock, p.HEADER_SIZE, time.monotonic() + 10, "header"))
    return header, p._recv_exact(sock, header.wire_len, time.monotonic() + 10, "payload")


@pytest.mark.parametrize("encrypt", [False, True])
def test_native_frames_carry_the_tags_the_python_definition_gives(tmp_path, encrypt) -> None:
    """The data path (C, libcrypto) and the control messages (Python, cryptography) seal with
    one definition: a frame the native sender made opens with the Python sealer."""
    data = bytes(range(256)) * 1024 * 3 + b"tail"
    src = tmp_path / "src"
    src.write_bytes(data)
    out, into = socket.socketpair()
    with out, into, open(src, "rb") as source:
        sender = native.StreamSender(p.MIN_FRAME_SIZE, "none", 1, 0)
        result: list[tuple[int, int, str]] = []
        thread = threading.Thread(target=lambda: result.append(
            sender.run(source.fileno(), out.fileno(), 0, KEYS.sender, encrypt)))
        thread.start()
        opener, got = Sealer(KEYS.sender, encrypt), b""
        while True:
            header, payload = _read_frame(into)
            kind_of = KIND_END if header.flags & p.FLAG_END else KIND_DATA
            plain = opener.open(header.authenticated(), payload, header.tag, kind_of,
                                header.offset)
            assert (plain != payload) == encrypt
            assert header.checksum == (0 if encrypt else native.frame_checksum(plain,
                                                                               header.offset))
            if kind_of == KIND_END:
                break
            got += plain
        thread.join()
        with pytest.raises(IntegrityError):
            opener.open(header.authenticated(), payload, header.tag, KIND_END, header.offset + 1)
    assert result[0][0] == 0, result
    assert got == data


def test_sealed_control_messages_are_numbered_and_authenticated() -> None:
    left, right = socket.socketpair()
    with left, right:
        sender, receiver = p.Channel.for_sender(left, KEYS), p.Channel.for_receiver(right, KEYS)
        sender.send({"type": p.ACK})
        assert receiver.recv(1, (p.ACK,)) == {"type": p.ACK}
        frame = bytearray(p.encode_control({"type": p.ACK}, Sealer(KEYS.sender, False), 1))
        frame[-2] ^= 1
        left.sendall(bytes(frame))
        with pytest.raises(IntegrityError):
            receiver.recv(1, (p.ACK,))
        left.sendall(p.encode_control({"type": p.ACK}, Sealer(KEYS.sender, False), 0))
        with pytest.raises(ProtocolError, match="numbered 0, expected 1"):
            receiver.recv(1, (p.ACK,))


def test_a_reflected_message_fails_its_tag() -> None:
    """Each direction has its own key: a COMMIT sent back at the receiver is worth nothing."""
    left, right = socket.socketpair()
    with left, right:
        receiver = p.Channel.for_receiver(right, KEYS)
        left.sendall(p.encode_control({"type": p.ACK}, Sealer(KEYS.receiver, False), 0))
        with pytest.raises(IntegrityError):
            receiver.recv(1, (p.ACK,))


def test_a_length_mismatch_is_reported_as_one() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(p.Header(p.FLAG_CONTROL, 10, 12, 0, 0).pack())
        with pytest.raises(ProtocolError, match="wire length 10 differs from its length 12"):
            p.recv_control(right, 1, (p.HELLO,))
