"""What the fuzz harnesses found, each as a plain test of the behaviour the protocol asks for.

A finding that is not fixed yet is marked ``xfail(strict=True)`` and listed in ``known.py`` (so
that the harnesses go on past it): when the code is fixed the test passes, the strict mark makes
that a failure, and the mark and the ``known.py`` entry are removed. The inputs the harnesses
found are kept under ``regressions/`` and replayed by every fuzz run.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.transfer import protocol as p
from ployz.transfer import session, tickets
from ployz.transfer.errors import IdleTimeout, TransferError
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.receiver import Receiver, ReceiverTimeouts
from ployz.transfer.sender import Sender, SenderTimeouts
from ployz.transfer.tickets import Target, Ticket

TIMEOUT = 5.0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_sender_takes_or_refuses_an_accept_whose_notices_are_not_a_list(
        listener: socket.socket, tmp_path: Path) -> None:
    """A receiver (authenticated, so buggy rather than hostile) whose ACCEPT says
    ``"notices": 5``: the sender may take the ACCEPT or refuse it with a typed error, not
    fail with a TypeError."""
    key = Ed25519PrivateKey.generate()
    source_path = tmp_path / "source"
    source_path.write_bytes(b"x" * 100)

    def receiver_side() -> None:
        conn, _ = listener.accept()
        with conn:
            ephemeral = session.Ephemeral()
            info_payload = p.send_control(conn, {
                "type": p.INFO, "protocol": p.PROTOCOL_VERSION,
                "target": {"kind": "file", "name": "/x"}, "kx": ephemeral.public_text})
            hello, hello_payload = p.recv_raw_control(conn, TIMEOUT, (p.HELLO,))
            transcript = session.session_transcript(info_payload, hello_payload)
            keys = session.derive_keys(ephemeral.exchange(hello["kx"]), None, transcript, False)
            p.Channel.for_receiver(conn, keys).send({
                "type": p.ACCEPT, "codec": "none", "proof": None,
                "resume": {"offset": 0, "token": None, "notices": 5, "complete": False}})
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1 << 16):
                pass

    peer = _in_thread(receiver_side)
    sender = Sender(FileSource(source_path), listener.getsockname(), key=key, codec="none",
                    timeouts=SenderTimeouts(handshake=TIMEOUT))
    sock = socket.create_connection(listener.getsockname())
    try:
        with contextlib.suppress(TransferError):
            sender._handshake(sock)
    finally:
        sock.close()
        peer.join(TIMEOUT)


def test_receiver_ignores_an_abort_whose_ticket_names_another_target(
        listener: socket.socket, tmp_path: Path) -> None:
    """Found when the handshake checked a ticket's target only for HELLOs without ``abort``:
    a ticket for any other target, with a valid proof, ended a receiver that had not started a
    transfer (``TransferAborted``). Such an ABORT is for another receiver; this one refuses it
    and keeps waiting."""
    key = Ed25519PrivateKey.generate()
    sink = FileSink(tmp_path / "target")
    receiver = Receiver(listener, sink, key.public_key(),
                        timeouts=ReceiverTimeouts(handshake=TIMEOUT, wait=1.0))

    def sender_side() -> None:
        with socket.create_connection(listener.getsockname()) as sock:
            _info, info_payload = p.recv_raw_control(sock, TIMEOUT, (p.INFO,))
            ephemeral = session.Ephemeral()
            ticket = tickets.sign(Ticket("other", Target("file", "/elsewhere"),
                                         time.time() + 600), key)
            hello: dict[str, Any] = {
                "type": p.HELLO, "protocol": p.PROTOCOL_VERSION, "ticket": ticket,
                "transfer_id": "other", "frame_size": p.DEFAULT_FRAME_SIZE,
                "codecs": ["none"], "stream": {"kind": "file", "size": 1},
                "kx": ephemeral.public_text, "encrypt": False, "auth": "signature",
                "abort": "gave up"}
            hello["proof"] = session.sign_hello(key, session.hello_transcript(info_payload,
                                                                              hello))
            p.send_control(sock, hello)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):
                pass

    client = _in_thread(sender_side)
    try:
        with pytest.raises(IdleTimeout):
            receiver.serve()
    finally:
        client.join(TIMEOUT)
