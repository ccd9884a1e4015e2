"""Fixtures of the control-plane contract suite: each test runs once per backend.

- ``sqlite``: a fresh SQLite file in the test's temporary directory.
- ``nats``: a real ``nats-server -js`` started once per session on a free port with its own store
  directory; each test gets its own buckets (a unique bucket prefix), so tests do not see each
  other's facts.

The 3-node cluster used by the failover test is built from the same :class:`NatsServer`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.control import ControlPlane, Machine, open_control_plane

SERVER_START_TIMEOUT_S = 15.0


def nats_server_binary() -> str:
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        raise RuntimeError("nats-server not found: run `make setup` (Debian package nats-server)")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NatsServer:
    """One ``nats-server`` process with JetStream, optionally a member of a cluster."""

    def __init__(self, root: Path, name: str, cluster_port: int | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.cluster_port = cluster_port
        self.store = root / name
        self.log = root / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, routes: list[int] | None = None) -> None:
        command = [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        command += ["-sd", str(self.store), "-n", self.name]
        if self.cluster_port is not None:
            command += ["--cluster_name", "ployz-test"]
            command += ["--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            command += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes or [])]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server {self.name} did not listen") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """Stop like a crashed machine would: no shutdown, no leadership hand-over."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def nats_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pz-nats-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_server(nats_root: Path) -> Iterator[NatsServer]:
    server = NatsServer(nats_root, "single")
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "nats"])
def control_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/control.db"
    server: NatsServer = request.getfixturevalue("nats_server")
    return f"nats://{server.url}?bucket_prefix=t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cp(control_url: str) -> Iterator[ControlPlane]:
    plane = open_control_plane(control_url)
    yield plane
    plane.close()


MACHINES = ("machine-a", "machine-b", "machine-c")


@pytest.fixture
def machines(cp: ControlPlane) -> tuple[str, ...]:
    """Three registered machines, all active."""
    for index, machine_id in enumerate(MACHINES, start=1):
        cp.register_machine(
            Machine(id=machine_id, overlay_ip=f"10.210.{index}.1", subnet=f"10.210.{index}.0/24")
        )
    return MACHINES


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Three JetStream servers joined by cluster routes; stopped (if still running) at the end."""
    cluster_ports = [free_port() for _ in range(3)]
    servers = [
        NatsServer(tmp_path, f"node-{i}", cluster_port=p) for i, p in enumerate(cluster_ports)
    ]
    try:
        for server in servers:
            server.start(routes=[p for p in cluster_ports if p != server.cluster_port])
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def private_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of the test's own, for tests that kill it."""
    server = NatsServer(tmp_path, "private")
    server.start()
    yield server
    server.stop()
