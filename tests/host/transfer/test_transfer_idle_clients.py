"""Connections that never authenticate must not hold a receiver up: its handshakes run
concurrently, so a hundred silent clients and a score of slowloris ones (a byte a second, never a
whole HELLO) do not keep a legitimate sender waiting for their handshake timeouts one after the
other; nor do they keep a receiver alive past its ``--wait-timeout``, which only an
authenticated sender may reset."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.host.transfer.relay import FLAG_CONTROL, HEADER, MAGIC, UNSEALED
from tests.host.transfer.transfer_data import same_bytes

IDLE = 100
SLOWLORIS = 20
HANDSHAKE_TIMEOUT = 30  # serialised, the clients above would hold a sender for an hour
# a message header that promises a HELLO which never comes whole
SLOW_BYTES = HEADER.pack(MAGIC, FLAG_CONTROL, 0, 1000, 1000, 0, 0, UNSEALED) + b"{" * 1000


class Pests:
    """Unauthenticated clients of a receiver: silent ones, slowloris ones that send one byte
    a second each, and optionally a stream of new connections opening all the time."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sockets: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Pests:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        for sock in self.sockets:
            sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10)
        self.sockets.append(sock)
        return sock

    def idle(self, count: int) -> None:
        for _ in range(count):
            self._connect()

    def slowloris(self, count: int) -> None:
        self.slow += [self._connect() for _ in range(count)]
        self._start(self._drip)

    def stream(self, every: float) -> None:
        """Opens a new silent connection every ``every`` seconds until the end."""
        def run() -> None:
            while not self.stop.wait(every):
                with contextlib.suppress(OSError):
                    self._connect()
        self._start(run)

    def _start(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _drip(self) -> None:
        at = 0
        while not self.stop.wait(1.0):
            for sock in self.slow:
                with contextlib.suppress(OSError):  # the receiver may have dropped it
                    sock.send(SLOW_BYTES[at:at + 1])
            at = (at + 1) % len(SLOW_BYTES)


@pytest.fixture
def pests() -> Iterator[Callable[[tuple[str, int]], Pests]]:
    started: list[Pests] = []

    def start(address: tuple[str, int]) -> Pests:
        started.append(Pests(address).__enter__())
        return started[-1]

    yield start
    for swarm in started:
        swarm.__exit__(None, None, None)


def test_a_sender_gets_through_idle_and_slowloris_clients(tmp_path: Path, cli, data_file,
                                                          pests) -> None:
    src, dst = data_file("mixed", 3_000_000), tmp_path / "dst"
    receiver = cli.receive(dst, "--handshake-timeout", HANDSHAKE_TIMEOUT, "--json")
    swarm = pests(receiver.host_port)
    swarm.idle(IDLE)
    swarm.slowloris(SLOWLORIS)
    time.sleep(2)  # a couple of drips: the slowloris clients are mid-header
    sender = cli.send(src, receiver.address, "--json")
    assert sender.wait(20) == 0, sender.stderr
    assert receiver.wait(20) == 0, receiver.stderr
    assert same_bytes(src, dst)
    assert sender.summary()["committed"] == receiver.summary()["committed"]


def test_unauthenticated_connections_do_not_extend_the_wait(tmp_path: Path, cli,
                                                            pests) -> None:
    receiver = cli.receive(tmp_path / "dst", "--handshake-timeout", HANDSHAKE_TIMEOUT,
                           "--wait-timeout", 3)
    swarm = pests(receiver.host_port)
    swarm.idle(10)
    swarm.slowloris(5)
    swarm.stream(every=0.1)
    assert receiver.wait(10) != 0
    assert "Traceback" not in receiver.stderr, receiver.stderr
    assert not (tmp_path / "dst").exists()
