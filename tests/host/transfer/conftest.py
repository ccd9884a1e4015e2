"""Fixtures for the transfer engine's host tests: a trusted key pair (in memory and in PEM files),
a receiver running in a thread on a real loopback socket, ``ployzctl transfer`` processes, a
misbehaving relay, tmpfs mounts of a chosen size, and data files of several kinds."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.transfer.files import FileSink
from ployz.transfer.keys import generate_keypair
from ployz.transfer.receiver import Receiver, ReceiverTimeouts
from ployz.transfer.results import ReceiveResult
from tests.host.transfer.relay import Plan, Relay
from tests.host.transfer.transfer_cli import Cli, KeyFiles
from tests.host.transfer.transfer_data import make_data


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
              timeouts: ReceiverTimeouts | None = None,
              secret: bytes | None = None) -> RunningReceiver:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        key = (trusted or signing_key).public_key()
        receiver = Receiver(listener, FileSink(dst), key, secret=secret,
                            timeouts=timeouts or ReceiverTimeouts(handshake=2, idle=5, wait=30,
                                                                  drain=1, linger=3))
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


@pytest.fixture
def key_files(tmp_path: Path) -> KeyFiles:
    private, public = generate_keypair(tmp_path / "keys")
    return KeyFiles(private, public)


@pytest.fixture
def cli(tmp_path: Path, key_files: KeyFiles) -> Iterator[Cli]:
    """Runs ``ployzctl transfer`` processes; none outlives its test."""
    runner = Cli(tmp_path / "logs", key_files)
    yield runner
    runner.close()


@pytest.fixture
def start_relay() -> Iterator[Callable[..., Relay]]:
    """Starts relays (see ``relay.Relay`` for the arguments) that stop with the test."""
    relays: list[Relay] = []

    def start(upstream: tuple[str, int], plan: list[Plan] | None = None,
              repeat: Plan | None = None, keep_bytes: bool = False) -> Relay:
        relay = Relay(upstream, plan or [], repeat, keep_bytes).__enter__()
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.__exit__(None, None, None)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mounts tmpfs file systems of a given size in bytes (the host tests run as root): memory
    fast enough that the disk never sets the pace, or small enough to run out of space."""
    mounts: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"tmpfs-{len(mounts)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(where)], check=True)
        mounts.append(where)
        return where

    yield mount
    for where in reversed(mounts):
        subprocess.run(["umount", "--lazy", str(where)], check=False)
