"""A test bed of network namespaces ("machines") on one bridged underlay, inside the test VM.

Test bed code, so it runs ``ip`` itself (the product goes through :mod:`ployz.net`). Its names
and addresses stay clear of the sandbox's (``pzbr0``, 10.99/10.210/10.211): namespaces
``pzt-<name>``, bridge ``pztbr0``, underlay 10.98.0.0/24.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

BRIDGE = "pztbr0"
UNDERLAY = "10.98.0"
_CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def sh(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass(frozen=True)
class BedMachine:
    name: str
    host: int

    @property
    def netns(self) -> str:
        return f"pzt-{self.name}"

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY}.{self.host}"


def build(machines: list[BedMachine]) -> None:
    """The bridge in the VM's own namespace, and one namespace per machine wired to it by a
    veth whose inner end is ``eth0`` with the machine's underlay address."""
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    for machine in machines:
        outer = f"pztv-{machine.name}"
        sh("ip", "netns", "add", machine.netns)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns",
           machine.netns)
        sh("ip", "link", "set", outer, "master", BRIDGE, "up")
        sh("ip", "-n", machine.netns, "link", "set", "lo", "up")
        sh("ip", "-n", machine.netns, "addr", "add", f"{machine.underlay_ip}/24", "dev", "eth0")
        sh("ip", "-n", machine.netns, "link", "set", "eth0", "up")


def tear_down(machines: list[BedMachine]) -> None:
    """Deleting a namespace deletes its interfaces, the veths' outer ends with them."""
    for machine in machines:
        subprocess.run(["ip", "netns", "delete", machine.netns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)


def in_netns(netns: str, work: Callable[[], T]) -> T:
    """Runs ``work`` in a thread that entered ``netns`` (setns changes only the calling
    thread's namespace): sockets it opens, netlink ones included, belong to that machine."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns} failed")
            finally:
                os.close(fd)
            outcome.append(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=enter_and_work, name=f"in-{netns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def connects(netns: str, host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether a TCP connection from ``netns`` to host:port is accepted."""

    def attempt() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            return False

    return in_netns(netns, attempt)


_libc = ctypes.CDLL(None, use_errno=True)
