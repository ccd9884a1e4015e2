"""A sandbox cluster inside the ZFS VM: machines ``machine-a``, ``machine-b``, ... each with its own
network namespace, pool on a sparse file, Docker daemon and agent, joined by WireGuard, sharing a
SQLite control plane; the operator (the VM's own namespace) gets a signing key and an overlay
address, so ``ployzctl`` works from there as it would on an operator's laptop.
"""

from __future__ import annotations

import os
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ployz.agent.client import AgentClient
from ployz.agent.remote import RemoteAgent
from ployz.control import open_control_plane
from ployz.control.models import Machine as MachineFact
from ployz.runtime.docker_runtime import DockerRuntime
from ployz.runtime.errors import DaemonUnreachable
from ployz.runtime.testimage import ensure_test_image
from ployz.sandbox.network import (
    OPERATOR_HOST,
    Endpoint,
    SandboxError,
    build_overlay,
    build_underlay,
    sh,
    teardown,
)
from ployz.transfer.keys import generate_private_key, load_private_key, public_key_text

ROOT = Path("/run/ployz")
AGENT_PORT = 7070
CONTAINER_PREFIX = "10.211"
POOL_SIZE = os.environ.get("PLOYZ_SANDBOX_POOL_SIZE", "2G")
START_TIMEOUT_S = 180.0


@dataclass
class Machine:
    endpoint: Endpoint
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.endpoint.name

    @property
    def home(self) -> Path:
        return ROOT / self.id

    @property
    def pool(self) -> str:
        return self.id

    @property
    def docker_socket(self) -> str:
        return str(self.home / "docker.sock")

    @property
    def agent_address(self) -> str:
        return f"{self.endpoint.overlay_ip}:{AGENT_PORT}"

    def spawn(self, name: str, argv: list[str]) -> None:
        """Starts a daemon in the machine's network namespace only: unlike ``ip netns exec``,
        nsenter keeps the shared mount namespace, so datasets the agent mounts are visible to
        the machine's dockerd (bind mounts into containers) and to the operator."""
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        prefix = ["nsenter", f"--net=/run/netns/{self.endpoint.netns}", "--"]
        self.processes.append(subprocess.Popen(prefix + argv, stdout=log, stderr=log,
                                               stdin=subprocess.DEVNULL,
                                               start_new_session=True))
        self.names.append(name)

    def kill(self, name: str) -> None:
        """Kills daemon ``name`` at once, as a crash or a lost machine would, and stops
        expecting it to run."""
        index = self.names.index(name)
        process = self.processes.pop(index)
        del self.names[index]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def check_alive(self) -> None:
        for process, name in zip(self.processes, self.names, strict=True):
            if process.poll() is not None:
                tail = (self.home / f"{name}.log").read_text(errors="replace")[-800:]
                raise SandboxError(f"{name} of {self.id} exited with status "
                                   f"{process.returncode}:\n{tail}")


def _wait_for(what: str, ready: Callable[[], bool], machine: Machine,
              timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        machine.check_alive()
        time.sleep(0.5)
    raise SandboxError(f"{what} did not come up within {timeout:.0f} s")


def _connects(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _answers(runtime: DockerRuntime) -> bool:
    try:
        runtime.version()
    except DaemonUnreachable:
        runtime.close()
        return False
    return True


class Cluster:
    def __init__(self, count: int) -> None:
        if not 1 <= count <= 20:
            raise SandboxError("--machines must be between 1 and 20")
        self.machines = [Machine(Endpoint(f"machine-{string.ascii_lowercase[i]}", i + 1,
                                          f"pz-{string.ascii_lowercase[i]}"))
                         for i in range(count)]
        self.operator = Endpoint("operator", OPERATOR_HOST, None)
        self.control_url = f"sqlite:///{ROOT / 'control.db'}"
        self.operator_key = ROOT / "operator.key"
        self.operator_pub = ROOT / "operator.pub"

    def agent(self, machine: Machine, timeout_s: float = 120.0) -> RemoteAgent:
        """The typed client of ``machine``'s agent, signed with the operator key; close it
        when done. ``timeout_s`` bounds each answer (emulated machines answer slowly)."""
        return RemoteAgent(AgentClient(machine.agent_address,
                                       load_private_key(self.operator_key),
                                       timeout_s=timeout_s))

    def environment(self) -> dict[str, str]:
        """What the operator's shell needs for ``ployzctl`` to find the cluster."""
        return {"PLOYZ_CONTROL": self.control_url, "PLOYZ_KEY": str(self.operator_key),
                "PLOYZ_SANDBOX_MACHINES": ",".join(m.id for m in self.machines)}

    def start(self) -> None:
        ROOT.mkdir(parents=True, exist_ok=True)
        key = generate_private_key(self.operator_key)
        self.operator_pub.write_text(public_key_text(key.public_key()) + "\n")
        endpoints = [m.endpoint for m in self.machines]
        build_underlay(endpoints)
        build_overlay([*endpoints, self.operator])
        # One daemon at a time: under emulation, dockerds starting together time out waiting
        # for their containerd.
        for machine in self.machines:
            self._make_pool(machine)
            self._start_docker(machine)
            self._load_image(machine)
        self._register_machines()
        for machine in self.machines:
            self._spawn_agent(machine)
        for machine in self.machines:
            self._wait_for_agent(machine)

    def stop_agent(self, machine: Machine) -> None:
        """Kills the machine's agent: to the others the machine is lost, its Docker and pool
        stay as they were."""
        machine.kill("agent")

    def start_agent(self, machine: Machine) -> None:
        """Starts the machine's agent again after :meth:`stop_agent`, on the same state."""
        self._spawn_agent(machine)
        self._wait_for_agent(machine)

    def _register_machines(self) -> None:
        """Joins the machines to the control plane, as an operator adding machines would."""
        with open_control_plane(self.control_url) as control:
            for machine in self.machines:
                control.register_machine(MachineFact(
                    id=machine.id, overlay_ip=machine.endpoint.overlay_ip,
                    subnet=f"{CONTAINER_PREFIX}.{machine.endpoint.host}.0/24"))

    def _make_pool(self, machine: Machine) -> None:
        machine.home.mkdir(parents=True, exist_ok=True)
        image = Path("/tmp") / f"ployz-{machine.id}.img"
        sh("truncate", "-s", POOL_SIZE, str(image))
        sh("zpool", "create", "-f", "-O", "compression=lz4", "-m", str(machine.home / "pool"),
           machine.pool, str(image))
        sh("zfs", "create", "-o", f"mountpoint={machine.home / 'docker'}", f"{machine.pool}/docker")

    def _start_docker(self, machine: Machine) -> None:
        """containerd first, then dockerd on it: dockerd's own containerd start times out under
        emulation, where containerd takes seconds to boot."""
        containerd_socket = machine.home / "containerd.sock"
        config = machine.home / "containerd.toml"
        config.write_text("version = 2\n")
        machine.spawn("containerd", [
            "containerd", "--config", str(config), "--address", str(containerd_socket),
            "--root", str(machine.home / "containerd-root"),
            "--state", str(machine.home / "containerd-state")])
        _wait_for(f"containerd of {machine.id}", containerd_socket.exists, machine)
        machine.spawn("dockerd", [
            "dockerd", "--containerd", str(containerd_socket),
            "--data-root", str(machine.home / "docker"),
            "--exec-root", str(machine.home / "docker-exec"),
            "--pidfile", str(machine.home / "docker.pid"),
            "-H", f"unix://{machine.docker_socket}", "--bridge", "none",
            "--iptables=false", "--ip6tables=false", "--storage-driver", "zfs"])

    def _load_image(self, machine: Machine) -> None:
        runtime = DockerRuntime(machine.docker_socket)
        _wait_for(f"dockerd of {machine.id}",
                  lambda: os.path.exists(machine.docker_socket) and _answers(runtime), machine)
        ensure_test_image(runtime)

    def _spawn_agent(self, machine: Machine) -> None:
        machine.spawn("agent", [
            sys.executable, "-m", "ployz.agent.daemon", "--machine-id", machine.id,
            "--listen", machine.agent_address, "--trust", str(self.operator_pub),
            "--state-dir", str(machine.home / "agent"), "--pool", machine.pool,
            "--docker-socket", machine.docker_socket, "--control", self.control_url])

    def _wait_for_agent(self, machine: Machine) -> None:
        _wait_for(f"agent of {machine.id} on {machine.agent_address}",
                  lambda: _connects(machine.agent_address), machine)

    def stop(self) -> None:
        for machine in self.machines:
            for process in reversed(machine.processes):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in machine.processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        for machine in self.machines:
            subprocess.run(["zpool", "destroy", "-f", machine.pool], check=False,
                           capture_output=True)
        teardown([m.endpoint for m in self.machines])
