"""A sandbox cluster inside the ZFS VM, formed the way an operator forms one on real machines.

Machines ``machine-a``, ``machine-b``, ... each get a network namespace on a bridged underlay, a
pool on a sparse file and a Docker daemon: the hardware. Everything that makes them a cluster is
the product's own: ``ployzctl machine init`` on the first (the control plane, NATS JetStream by
default, and the operator key), ``machine invite`` and ``machine join`` on each other one, and
the agents, which keep the WireGuard overlay from the machine facts. The operator works from the
first machine: the process that builds the sandbox enters its namespace (see
:mod:`ployz.sandbox.netns`), so the agent clients, ``ployzctl`` and the tests reach the overlay
as a shell on that machine would.
"""

from __future__ import annotations

import os
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ployz.agent.client import AgentClient
from ployz.agent.remote import RemoteAgent
from ployz.deploy.membership import daemons
from ployz.deploy.membership.local import ControlKind, MachineConfig, MachineHome
from ployz.deploy.membership.reachability import wait_for_agent
from ployz.runtime.docker_runtime import DockerRuntime
from ployz.runtime.errors import DaemonUnreachable
from ployz.runtime.testimage import ensure_test_image
from ployz.sandbox import netns
from ployz.sandbox.network import Endpoint, SandboxError, attach, build_bridge, sh, teardown
from ployz.transfer.keys import load_private_key

ROOT = Path("/run/ployz")
AGENT_PORT = 7070
POOL_SIZE = os.environ.get("PLOYZ_SANDBOX_POOL_SIZE", "2G")
START_TIMEOUT_S = 180.0
INVITE_TTL = "15m"
MAX_MACHINES = 20


@dataclass
class Machine:
    endpoint: Endpoint
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    docker: bool = True
    """Whether the machine has a Docker daemon (a member without one runs no service)."""

    @property
    def id(self) -> str:
        return self.endpoint.name

    @property
    def home(self) -> Path:
        return ROOT / self.id

    @property
    def ployz_home(self) -> MachineHome:
        """The machine's ployz directory, as ``machine init``/``join`` fill it."""
        return MachineHome(self.home / "ployz")

    @property
    def config(self) -> MachineConfig:
        config = self.ployz_home.load()
        if config is None:
            raise SandboxError(f"{self.id} is not a member yet")
        return config

    @property
    def pool(self) -> str:
        return self.id

    @property
    def docker_socket(self) -> str:
        return str(self.home / "docker.sock")

    @property
    def overlay_ip(self) -> str:
        return self.config.overlay_ip

    @property
    def agent_address(self) -> str:
        return f"{self.overlay_ip}:{AGENT_PORT}"

    def member_arguments(self) -> list[str]:
        """What ``init`` and ``join`` are told about this machine."""
        return ["--pool", self.pool, "--endpoint", self.endpoint.wireguard_endpoint,
                "--home", str(self.ployz_home.root), "--docker-socket", self.docker_socket]

    def ployzctl(self, *args: str, env: dict[str, str] | None = None) -> str:
        """``ployzctl ARGS`` run on this machine (in its namespace); its stdout."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PLOYZ_")}
        done = subprocess.run(self.endpoint.nsenter(sys.executable, "-m", "ployzctl", *args),
                              capture_output=True, text=True, check=False,
                              env={**clean, **(env or {})}, timeout=600)
        if done.returncode != 0:
            raise SandboxError(f"`ployzctl {' '.join(args[:2])}` on {self.id} failed "
                               f"({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def spawn(self, name: str, argv: list[str]) -> None:
        """Starts a daemon of the test bed (containerd, dockerd) in the machine's namespace."""
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.processes.append(subprocess.Popen(self.endpoint.nsenter(*argv), stdout=log,
                                               stderr=log, stdin=subprocess.DEVNULL,
                                               start_new_session=True))
        self.names.append(name)

    def check_alive(self) -> None:
        for process, name in zip(self.processes, self.names, strict=True):
            if process.poll() is not None:
                tail = (self.home / f"{name}.log").read_text(errors="replace")[-800:]
                raise SandboxError(f"{name} of {self.id} exited with status "
                                   f"{process.returncode}:\n{tail}")


def sandbox_machine(index: int) -> Machine:
    """The sandbox's ``index``-th machine (0: machine-a), as it is wired."""
    letter = string.ascii_lowercase[index]
    return Machine(Endpoint(f"machine-{letter}", index + 1, f"pz-{letter}"))


def sandbox_machine_named(machine_id: str) -> Machine:
    """A sandbox machine by its id (``machine-c``); SandboxError for another name."""
    letter = machine_id.removeprefix("machine-")
    if len(letter) != 1 or letter not in string.ascii_lowercase[:MAX_MACHINES]:
        raise SandboxError(f"{machine_id!r} is not a sandbox machine (machine-a, machine-b, ...)")
    return sandbox_machine(string.ascii_lowercase.index(letter))


def _wait_for(what: str, ready: Callable[[], bool], machine: Machine,
              timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        machine.check_alive()
        time.sleep(0.5)
    raise SandboxError(f"{what} did not come up within {timeout:.0f} s")


def _answers(runtime: DockerRuntime) -> bool:
    try:
        runtime.version()
    except DaemonUnreachable:
        runtime.close()
        return False
    return True


class Cluster:
    def __init__(self, count: int, control: ControlKind = "nats") -> None:
        if not 1 <= count <= MAX_MACHINES:
            raise SandboxError(f"--machines must be between 1 and {MAX_MACHINES}")
        self.control: ControlKind = control
        self.machines = [self._new_machine(i) for i in range(count)]
        self._built: list[Machine] = []
        self.join_tokens: dict[str, str] = {}
        """The token each machine joined with, spent now (a refused join may try it again)."""

    @staticmethod
    def _new_machine(index: int) -> Machine:
        return sandbox_machine(index)

    @property
    def first(self) -> Machine:
        return self.machines[0]

    @property
    def control_url(self) -> str:
        """The control plane as the first machine reaches it (with its credentials)."""
        return self.first.config.control

    @property
    def operator_key(self) -> Path:
        """The operator key ``machine init`` made on the first machine."""
        return self.first.ployz_home.operator_key

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
        build_bridge()
        for machine in self.machines:
            self._build(machine)
        self.first.ployzctl("machine", "init", self.first.id, "--control", self.control,
                            *self.first.member_arguments())
        netns.enter(self.first.endpoint.netns_path)
        for machine in self.machines[1:]:
            self.join(machine)

    def prepare_machine(self, docker: bool = True) -> Machine:
        """A new machine's hardware (wires, pool and, unless ``docker`` is False, Docker), not
        yet a member: a machine bought later, before ``machine join`` runs on it. Without
        Docker it can join (its agent starts without one) but not run services."""
        machine = self._new_machine(len(self._built))
        with netns.inside(netns.ROOT):
            self._build(machine, docker)
        return machine

    def forget(self, machine: Machine) -> None:
        """After ``machine rm`` (or for a machine that never joined): it is no longer one of
        the cluster's, and its daemons stop as they would when it is decommissioned; its
        wires and pool stay until :meth:`stop`."""
        if machine in self.machines:
            self.machines.remove(machine)
        self._halt(machine)

    def invite(self) -> str:
        """A fresh join token, from the operator on the first machine."""
        return self.operator_ployzctl("machine", "invite", "--ttl", INVITE_TTL).strip()

    def join(self, machine: Machine, token: str | None = None) -> None:
        """``machine join`` on ``machine`` with ``token`` (a fresh invite when None), which
        :attr:`join_tokens` keeps, spent now."""
        token = token or self.invite()
        machine.ployzctl("machine", "join", token, "--id", machine.id,
                         *machine.member_arguments())
        self.join_tokens[machine.id] = token
        if machine not in self.machines:
            self.machines.append(machine)

    def operator_ployzctl(self, *args: str) -> str:
        return self.first.ployzctl(*args, env=self.environment())

    def stop_agent(self, machine: Machine) -> None:
        """Kills the machine's agent at once: to the others the machine is lost, its Docker,
        pool and WireGuard interface stay as they were."""
        daemons.kill(machine.ployz_home.agent_daemon(machine.config))

    def start_agent(self, machine: Machine) -> None:
        """Starts the machine's agent again after :meth:`stop_agent`, on the same state, as
        its service manager would."""
        agent = machine.ployz_home.agent_daemon(machine.config)
        with netns.inside(machine.endpoint.netns_path):
            daemons.start(agent)
        wait_for_agent(agent, machine.config)

    def kill_control_server(self) -> None:
        """SIGKILLs the single JetStream server on the first machine (the control plane with
        ``--control nats``, until a third machine joins): its clients see it vanish mid-call."""
        daemons.kill(self.first.ployz_home.nats_daemon())

    def start_control_server(self) -> None:
        """Starts the single JetStream server again on its stored state, as its service
        manager (``Restart=on-failure``) would after :meth:`kill_control_server`."""
        with netns.inside(self.first.endpoint.netns_path):
            daemons.start(self.first.ployz_home.nats_daemon())

    def kill_replica(self, machine: Machine) -> None:
        """SIGKILLs ``machine``'s server of the replicated JetStream cluster, as a crash
        would: no shutdown, no leadership hand-over."""
        daemons.kill(machine.ployz_home.replica_daemon())

    def start_replica(self, machine: Machine) -> None:
        """Starts ``machine``'s replicated server again on its stored state."""
        with netns.inside(machine.endpoint.netns_path):
            daemons.start(machine.ployz_home.replica_daemon())

    @staticmethod
    def _halt(machine: Machine) -> None:
        """Stops every daemon of ``machine``: its agent, gateway and NATS servers, then
        Docker."""
        home = machine.ployz_home
        config = home.load()
        if config is not None:
            daemons.stop(home.agent_daemon(config))
            if home.gateway_config.exists():
                daemons.stop(home.gateway_daemon())
            if home.nats_config.exists():
                daemons.stop(home.nats_daemon())
            if home.replica_config.exists():
                daemons.stop(home.replica_daemon())
        for process in reversed(machine.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in machine.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def _build(self, machine: Machine, docker: bool = True) -> None:
        """The machine's hardware: wires, pool and Docker daemon (one at a time: under
        emulation, dockerds starting together time out waiting for their containerd)."""
        attach(machine.endpoint)
        self._built.append(machine)
        self._make_pool(machine)
        machine.docker = docker
        if docker:
            self._start_docker(machine)
            self._load_image(machine)

    def _make_pool(self, machine: Machine) -> None:
        """A pool on a sparse file under /tmp, trimmed as it frees blocks: /tmp holds the
        file's every written block otherwise, and a bench moving 1 GiB volumes through the
        pools again and again filled the VM's /tmp."""
        machine.home.mkdir(parents=True, exist_ok=True)
        image = Path("/tmp") / f"ployz-{machine.id}.img"
        sh("truncate", "-s", POOL_SIZE, str(image))
        sh("zpool", "create", "-f", "-o", "autotrim=on", "-O", "compression=lz4",
           "-m", str(machine.home / "pool"), machine.pool, str(image))
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

    def stop(self) -> None:
        for machine in self._built:
            self._halt(machine)
        for machine in self._built:
            subprocess.run(["zpool", "destroy", "-f", machine.pool], check=False,
                           capture_output=True)
        netns.enter(netns.ROOT)
        teardown([m.endpoint for m in self._built])
