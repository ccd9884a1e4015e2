"""Fixtures for the transfer engine's host tests: a trusted key pair, a receiver running in a
thread on a real loopback socket, and data files of several kinds."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from transfer_data import make_data

from ployz.transfer import FileSink, Receiver, ReceiveResult, ReceiverTimeouts


@dataclass
class RunningReceiver:
    """A Receiver serving in a background thread; ``result()`` waits for it."""

    receiver: Receiver
    address: tuple[str, int]
    thread: threading.Thread
    outcome: dict[str, object] = field(default_factory=dict)

    def stop(self) -> None:
        """Stops a receiver waiting for connections, as if its process had died."""
        listener = self.receiver.listener
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        listener.close()

    def result(self, timeout: float = 60) -> ReceiveResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "receiver did not finish"
        if "error" in self.outcome:
            raise self.outcome["error"]  # type: ignore[misc]
        return self.outcome["result"]  # type: ignore[return-value]


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def start_receiver(signing_key: Ed25519PrivateKey) -> Iterator[
        Callable[..., RunningReceiver]]:
    listeners: list[socket.socket] = []
    running: list[RunningReceiver] = []

    def start(dst: Path, *, trusted: Ed25519PrivateKey | None = None,
              timeouts: ReceiverTimeouts | None = None) -> RunningReceiver:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        key = (trusted or signing_key).public_key()
        receiver = Receiver(listener, FileSink(dst), key,
                            timeouts=timeouts or ReceiverTimeouts(handshake=2, idle=5, wait=30,
                                                                  drain=1))
        handle = RunningReceiver(receiver, listener.getsockname(), threading.Thread())

        def serve() -> None:
            try:
                handle.outcome["result"] = receiver.serve()
            except BaseException as exc:  # handed to the test through result()
                handle.outcome["error"] = exc

        handle.thread = threading.Thread(target=serve, daemon=True)
        handle.thread.start()
        running.append(handle)
        return handle

    yield start
    for listener in listeners:
        # shutdown wakes a receiver still waiting in poll/accept; close alone would not
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    for handle in running:
        handle.thread.join(10)


@pytest.fixture
def data_file(tmp_path: Path) -> Callable[..., Path]:
    def make(kind: str, size: int, seed: int = 0) -> Path:
        path = tmp_path / f"src-{kind}-{size}-{seed}"
        path.write_bytes(make_data(kind, size, seed))
        return path
    return make
