"""The sandbox's wires: one network namespace per machine, each with a veth on one bridge (the
underlay, as the LAN or the internet between real machines would be).

Only the wires: the WireGuard overlay on top is the product's own work (``machine init`` and
``join`` register each machine's key and endpoint, every agent keeps its peers). The sandbox
builds a test bed, so it drives ``ip`` directly; the product never does.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

UNDERLAY_PREFIX = "10.99.0"
WG_PORT = 51820
BRIDGE = "pzbr0"
BRIDGE_HOST = 254


class SandboxError(RuntimeError):
    """A step of building the sandbox failed; the message names the step and the tool's error."""


def sh(*args: str, input: str | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, input=input, check=False)
    if done.returncode != 0:
        raise SandboxError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Endpoint:
    """One machine's place on the underlay: its namespace and address."""

    name: str
    host: int
    netns: str

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY_PREFIX}.{self.host}"

    @property
    def wireguard_endpoint(self) -> str:
        return f"{self.underlay_ip}:{WG_PORT}"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    def nsenter(self, *argv: str) -> list[str]:
        """``argv`` run in this machine's network namespace only: unlike ``ip netns exec``,
        nsenter keeps the shared mount namespace, so datasets the agent mounts are visible to
        the machine's dockerd (bind mounts into containers) and to the operator."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]


def build_bridge() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{UNDERLAY_PREFIX}.{BRIDGE_HOST}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    sh("ip", "link", "set", "lo", "up")


def attach(machine: Endpoint) -> None:
    """A new namespace for ``machine``, wired to the bridge (run in the VM's own namespace)."""
    veth = f"ve{machine.host}"
    sh("ip", "netns", "add", machine.netns)
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", machine.netns)
    sh("ip", "link", "set", veth, "master", BRIDGE, "up")
    for args in (("link", "set", "lo", "up"),
                 ("addr", "add", f"{machine.underlay_ip}/24", "dev", "eth0"),
                 ("link", "set", "eth0", "up")):
        sh("ip", "-n", machine.netns, *args)


def teardown(machines: list[Endpoint]) -> None:
    for machine in machines:
        subprocess.run(["ip", "netns", "delete", machine.netns], check=False,
                       capture_output=True)
    subprocess.run(["ip", "link", "delete", BRIDGE], check=False, capture_output=True)
