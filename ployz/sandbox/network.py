"""The sandbox's networks: one network namespace per machine on a bridged underlay, and a kernel
WireGuard overlay across them (and the operator, in the VM's own namespace), as on a real fleet.

The sandbox builds a test bed, so it drives ``ip`` and ``wg`` directly; the product never does.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

UNDERLAY_PREFIX = "10.99.0"
OVERLAY_PREFIX = "10.210.0"
WG_PORT = 51820
BRIDGE = "pzbr0"
OPERATOR_HOST = 254


class SandboxError(RuntimeError):
    """A step of building the sandbox failed; the message names the step and the tool's error."""


def sh(*args: str, input: str | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, input=input, check=False)
    if done.returncode != 0:
        raise SandboxError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Endpoint:
    """One participant of the overlay: a machine's namespace, or the operator (namespace None)."""

    name: str
    host: int
    netns: str | None

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY_PREFIX}.{self.host}"

    @property
    def overlay_ip(self) -> str:
        return f"{OVERLAY_PREFIX}.{self.host}"

    def ip(self, *args: str) -> str:
        return sh("ip", *(("-n", self.netns) if self.netns else ()), *args)

    def run(self, *args: str, input: str | None = None) -> str:
        prefix = ("ip", "netns", "exec", self.netns) if self.netns else ()
        return sh(*prefix, *args, input=input)


def build_underlay(machines: list[Endpoint]) -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{UNDERLAY_PREFIX}.{OPERATOR_HOST}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    sh("ip", "link", "set", "lo", "up")
    for machine in machines:
        assert machine.netns is not None
        veth = f"ve{machine.host}"
        sh("ip", "netns", "add", machine.netns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns",
           machine.netns)
        sh("ip", "link", "set", veth, "master", BRIDGE, "up")
        machine.ip("link", "set", "lo", "up")
        machine.ip("addr", "add", f"{machine.underlay_ip}/24", "dev", "eth0")
        machine.ip("link", "set", "eth0", "up")


def build_overlay(endpoints: list[Endpoint]) -> None:
    """A full WireGuard mesh: every endpoint peers with every other on the overlay subnet."""
    keys = {}
    for endpoint in endpoints:
        private = sh("wg", "genkey")
        keys[endpoint.name] = (private, sh("wg", "pubkey", input=private))
    for endpoint in endpoints:
        endpoint.ip("link", "add", "wg0", "type", "wireguard")
        endpoint.run("wg", "set", "wg0", "private-key", "/dev/stdin", "listen-port",
                     str(WG_PORT), input=keys[endpoint.name][0])
        for peer in endpoints:
            if peer is endpoint:
                continue
            endpoint.run("wg", "set", "wg0", "peer", keys[peer.name][1], "allowed-ips",
                         f"{peer.overlay_ip}/32", "endpoint", f"{peer.underlay_ip}:{WG_PORT}")
        endpoint.ip("addr", "add", f"{endpoint.overlay_ip}/24", "dev", "wg0")
        endpoint.ip("link", "set", "wg0", "up")


def teardown(machines: list[Endpoint]) -> None:
    for machine in machines:
        subprocess.run(["ip", "netns", "delete", str(machine.netns)], check=False,
                       capture_output=True)
    subprocess.run(["ip", "link", "delete", "wg0"], check=False, capture_output=True)
    subprocess.run(["ip", "link", "delete", BRIDGE], check=False, capture_output=True)
