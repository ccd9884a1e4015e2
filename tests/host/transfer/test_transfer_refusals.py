"""The receiver's defences: tickets that are missing, signed by another key, expired, for
another target or transfer are refused with a typed error; garbage and malformed frames get a
clean error; and after every one of them the receiver still serves the real transfer."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ployz.transfer import protocol as p
from ployz.transfer import session
from ployz.transfer.errors import ConnectionLost, Refused
from ployz.transfer.files import FileSource
from ployz.transfer.receiver import ReceiverTimeouts
from ployz.transfer.sender import Sender
from ployz.transfer.tickets import Target, Ticket, sign
from tests.host.transfer.transfer_data import same_bytes

FRAME = 64 * 1024
SECRET = bytes(range(32))  # what an orchestrator gives both ends of a transfer
UNSEALED_TAG = bytes(16)


def ticket_for(key: Ed25519PrivateKey, dst: Path, *, transfer_id: str = "t-1",
               expires_in: float = 600, target: Target | None = None) -> str:
    return sign(Ticket(transfer_id, target or Target("file", str(dst)),
                       time.time() + expires_in), key)


def refused_code(src: Path, address: tuple[str, int], ticket: str,
                 transfer_id: str = "t-1") -> str:
    with pytest.raises(Refused) as refusal:
        Sender(FileSource(src), address, ticket=ticket, secret=SECRET, transfer_id=transfer_id,
               frame_size=FRAME).send()
    return refusal.value.code


def test_bad_tickets_are_refused_and_the_receiver_keeps_serving(
        tmp_path: Path, data_file, start_receiver, signing_key) -> None:
    src = data_file("mixed", 300_000)
    dst = tmp_path / "received"
    receiver = start_receiver(dst, secret=SECRET)
    stranger = Ed25519PrivateKey.generate()
    valid = ticket_for(signing_key, dst)
    bad = {
        "signed by an untrusted key": ticket_for(stranger, dst),
        "expired": ticket_for(signing_key, dst, expires_in=-1),
        "for another file": ticket_for(signing_key, dst,
                                       target=Target("file", str(tmp_path / "elsewhere"))),
        "for a dataset": ticket_for(signing_key, dst, target=Target("zfs", "tank/data")),
        "tampered": valid[:-3] + ("A" if valid[-3] != "A" else "B") + valid[-2:],
        "garbage": "not-a-ticket",
        "missing": "",
    }
    for reason, ticket in bad.items():
        assert refused_code(src, receiver.address, ticket) == "ticket", reason
    assert refused_code(src, receiver.address, valid, transfer_id="t-2") == "ticket"

    Sender(FileSource(src), receiver.address, ticket=valid, secret=SECRET, transfer_id="t-1",
           frame_size=FRAME).send()
    result = receiver.result()
    assert same_bytes(src, dst)
    assert result.refused == len(bad) + 1


def test_a_connection_announcing_another_stream_is_refused(tmp_path: Path, data_file,
                                                           start_receiver,
                                                           signing_key) -> None:
    """A file transfer continues one stream at its commit point: a connection of the same
    transfer that announces another stream (the file changed) must not add to it."""
    src = data_file("text", 300_000)
    dst = tmp_path / "received"
    receiver = start_receiver(dst, secret=SECRET)
    first = _handshake(receiver.address, ticket_for(signing_key, dst), "t-1", size=10)
    assert first[2]["type"] == p.ACCEPT
    first[0].close()
    assert refused_code(src, receiver.address, ticket_for(signing_key, dst)) == "stream"


def test_a_second_transfer_is_refused_while_one_is_in_progress(
        tmp_path: Path, data_file, start_receiver, signing_key) -> None:
    src = data_file("text", 300_000)
    dst = tmp_path / "received"
    receiver = start_receiver(dst, secret=SECRET)
    first = _handshake(receiver.address, ticket_for(signing_key, dst), "t-1",
                       size=src.stat().st_size)
    assert first[2]["type"] == p.ACCEPT
    first[0].close()
    other = ticket_for(signing_key, dst, transfer_id="t-9")
    assert refused_code(src, receiver.address, other, transfer_id="t-9") == "busy"
    Sender(FileSource(src), receiver.address, ticket=ticket_for(signing_key, dst),
           secret=SECRET, transfer_id="t-1", frame_size=FRAME).send()
    receiver.result()
    assert same_bytes(src, dst)


def _handshake(address: tuple[str, int], ticket: str, transfer_id: str,
               size: int = 1) -> tuple[socket.socket, p.Channel, dict]:
    """A hand-made sender's handshake, so that a test can then misbehave on a session the
    receiver authenticated."""
    sock = socket.create_connection(address)
    info, info_payload = p.recv_raw_control(sock, 5, (p.INFO,))
    ephemeral = session.Ephemeral()
    hello = {"type": p.HELLO, "protocol": p.PROTOCOL_VERSION, "ticket": ticket,
             "transfer_id": transfer_id, "frame_size": FRAME, "codecs": ["zstd"],
             "stream": {"kind": "file", "size": size}, "kx": ephemeral.public_text,
             "encrypt": False, "auth": "secret"}
    hello["proof"] = session.secret_proof(SECRET, session.hello_transcript(info_payload, hello))
    hello_payload = p.send_control(sock, hello)
    keys = session.derive_keys(ephemeral.exchange(info["kx"]), SECRET,
                               session.session_transcript(info_payload, hello_payload), False)
    channel = p.Channel.for_sender(sock, keys)
    return sock, channel, channel.recv_reply(5, (p.ACCEPT, p.REJECT), (p.REJECT,))


def _talk(address: tuple[str, int], payload: bytes) -> bytes:
    """Sends bytes as a client would, then reads whatever the receiver answers until it
    closes (it must close: a refused or failed connection is never left hanging)."""
    with socket.create_connection(address, timeout=10) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = b""
        try:
            while chunk := sock.recv(1 << 16):
                answer += chunk
        except OSError:
            pass
        return answer


def _messages(answer: bytes) -> list[dict]:
    """The unsealed messages of a conversation that never got past the handshake."""
    out = []
    while len(answer) >= p.HEADER_SIZE:
        header = p.Header.unpack(answer[:p.HEADER_SIZE])
        body = answer[p.HEADER_SIZE:p.HEADER_SIZE + header.wire_len]
        out.append(p.decode_control(header, body))
        answer = answer[p.HEADER_SIZE + header.wire_len:]
    return out


@pytest.fixture
def serving(tmp_path: Path, start_receiver):
    dst = tmp_path / "received"
    return start_receiver(dst, secret=SECRET), dst


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300))
def test_garbage_clients_get_a_clean_close(serving, garbage: bytes) -> None:
    receiver, _ = serving
    answer = _talk(receiver.address, garbage)
    # the receiver always introduces itself, and says nothing it would not say to anyone
    types = [m["type"] for m in _messages(answer)]
    assert types[0] == p.INFO
    assert set(types[1:]) <= {p.REJECT}


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.integers(0, 0xFFFF), reserved=st.integers(0, 0xFFFF),
       wire_len=st.integers(0, 2**32 - 1), raw_len=st.integers(0, 2**32 - 1),
       offset=st.integers(0, 2**64 - 1), body=st.binary(max_size=200))
def test_malformed_frames_after_a_valid_handshake_fail_the_connection_cleanly(
        serving, signing_key, flags: int, reserved: int, wire_len: int, raw_len: int,
        offset: int, body: bytes) -> None:
    receiver, dst = serving
    sock, channel, reply = _handshake(receiver.address, ticket_for(signing_key, dst), "t-1")
    with sock:
        assert reply["type"] == p.ACCEPT
        frame = struct.pack("<IHHIIQQ", p.MAGIC, flags, reserved, wire_len, raw_len, offset, 0)
        try:
            sock.sendall(frame + UNSEALED_TAG + body)
            sock.shutdown(socket.SHUT_WR)
            failure = channel.recv(10, (p.FAILURE,))
        except (OSError, ConnectionLost):
            failure = None  # the receiver may close before a reset lets its FAILURE through
    if failure is not None:
        assert failure["code"] in {"framing", "integrity", "connection", "timeout"}
    assert not dst.exists()


def test_the_receiver_serves_after_all_the_abuse(tmp_path: Path, data_file, start_receiver,
                                                 signing_key) -> None:
    dst = tmp_path / "received"
    receiver = start_receiver(dst)
    for payload in (b"", b"\x00" * 64, b"GET / HTTP/1.0\r\n\r\n",
                    struct.pack("<IHHIIQQ", p.MAGIC, p.FLAG_CONTROL, 0, 2**31, 2**31, 0, 0)
                    + UNSEALED_TAG):
        _talk(receiver.address, payload)
    src = data_file("mixed", 500_000)
    # a client that connects and says nothing holds the receiver for one handshake timeout only
    with socket.create_connection(receiver.address):
        Sender(FileSource(src), receiver.address, key=signing_key, frame_size=FRAME).send()
    receiver.result()
    assert same_bytes(src, dst)


def test_a_stalled_sender_times_out_and_the_receiver_keeps_serving(tmp_path: Path, data_file,
                                                                  start_receiver,
                                                                  signing_key) -> None:
    dst = tmp_path / "received"
    receiver = start_receiver(dst, timeouts=ReceiverTimeouts(handshake=0.5, idle=0.5, wait=30,
                                                             drain=0.2), secret=SECRET)
    src = data_file("text", 200_000)
    sock, channel, reply = _handshake(receiver.address, ticket_for(signing_key, dst), "t-1",
                                      size=200_000)
    with sock:
        assert reply["type"] == p.ACCEPT
        sock.sendall(p.Header(0, FRAME, FRAME, 0, 0).pack() + b"x" * 100)  # then nothing
        failure = channel.recv(10, (p.FAILURE,))
    assert failure["code"] == "timeout"
    Sender(FileSource(src), receiver.address, ticket=ticket_for(signing_key, dst),
           secret=SECRET, transfer_id="t-1", frame_size=FRAME).send()
    receiver.result()
    assert same_bytes(src, dst)
