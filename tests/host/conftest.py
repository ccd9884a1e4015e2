"""Fixtures shared by the host test suites: a private Docker daemon with the test image loaded,
and commits that do not wait for routing.

The host's agents run without a control plane (no overlay, no routing keeper), so no machine
ever acknowledges a commit's routing: every ``ployzctl`` the suites start gets
``PLOYZ_ROUTE_WAIT=0`` and names the machines that did not confirm instead of waiting 30 s for
them (the wait itself is tested in tests/host/deploy/test_deploy_apply.py and, with real
acknowledgements, in the e2e suite).

The daemon is started once per session with its own data root, exec root, pidfile, socket,
cgroup parent and containerd namespaces, without a bridge or iptables rules, so it never touches
a Docker daemon the machine may already run on the default socket.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ployz.runtime.docker_runtime import DockerRuntime
from ployz.runtime.errors import DaemonUnreachable
from ployz.runtime.testimage import ensure_test_image

DOCKERD_START_TIMEOUT_S = 90.0
DOCKERD_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TestDockerd:
    socket: str
    image: str


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts]
    return [t for t in targets if t == str(root) or t.startswith(f"{root}/")]


def _wait_until_answering(process: subprocess.Popen[bytes], socket: str, log: Path) -> None:
    runtime = DockerRuntime(socket)
    deadline = time.monotonic() + DOCKERD_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {process.returncode}:\n{log.read_text()}")
        try:
            runtime.version()
            return
        except DaemonUnreachable:
            if time.monotonic() > deadline:
                message = f"dockerd did not answer on {socket}:\n{log.read_text()}"
                raise RuntimeError(message) from None
            time.sleep(0.2)
        finally:
            runtime.close()


@pytest.fixture(autouse=True, scope="session")
def commits_do_not_wait_for_routing() -> Iterator[None]:
    os.environ["PLOYZ_ROUTE_WAIT"] = "0"
    yield
    del os.environ["PLOYZ_ROUTE_WAIT"]


@pytest.fixture(scope="session")
def dockerd() -> Iterator[TestDockerd]:
    binary = shutil.which("dockerd")
    if binary is None:
        raise RuntimeError("dockerd not found: run `make setup` (Debian package docker.io)")
    root = Path(tempfile.mkdtemp(prefix="pz-dockerd-"))
    # containerd namespaces allow letters and digits joined by single '.', '_' or '-', and a
    # temporary name may end in '_' or hold '__': a name of its own, made of hex digits
    tag = f"ployz-test-{secrets.token_hex(4)}"
    socket = str(root / "docker.sock")
    log = root / "dockerd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                "--data-root", str(root / "data"),
                "--exec-root", str(root / "exec"),
                "--pidfile", str(root / "dockerd.pid"),
                "-H", f"unix://{socket}",
                "--bridge", "none",
                "--iptables=false",
                "--cgroup-parent", tag,
                # Own namespaces, in case it finds the machine's containerd and shares it.
                "--containerd-namespace", tag,
                "--containerd-plugins-namespace", f"{tag}-plugins",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_answering(process, socket, log)
        runtime = DockerRuntime(socket)
        image = ensure_test_image(runtime)
        runtime.close()
        yield TestDockerd(socket=socket, image=image)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=DOCKERD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # dockerd leaves the mount of its default network namespace behind.
        for mountpoint in sorted(_mounts_under(root), reverse=True):
            subprocess.run(["umount", mountpoint], check=False)
        if not _mounts_under(root):
            shutil.rmtree(root, ignore_errors=True)
