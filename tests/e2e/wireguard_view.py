"""A machine's kernel WireGuard interface as `wg` shows it, read from outside the product."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from ployz.sandbox.cluster import Machine


@dataclass(frozen=True)
class PeerRow:
    """One peer line of ``wg show IFNAME dump``."""

    public_key: str
    endpoint: str
    allowed_ips: frozenset[str]
    latest_handshake: int
    rx_bytes: int
    keepalive: str


def _wg(machine: Machine, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", machine.endpoint.netns, "wg", "show",
                           machine.config.wireguard_interface, *args],
                          capture_output=True, text=True, check=True).stdout


def peers(machine: Machine) -> set[str]:
    """The public keys the machine's interface has as peers."""
    return set(_wg(machine, "peers").split())


def peer_rows(machine: Machine) -> dict[str, PeerRow]:
    """Every peer of the machine's interface by public key (the dump's first line is the
    interface's own)."""
    rows = {}
    for line in _wg(machine, "dump").splitlines()[1:]:
        key, _psk, endpoint, allowed, handshake, rx, _tx, keepalive = line.split("\t")
        rows[key] = PeerRow(key, endpoint, frozenset(allowed.split(",")), int(handshake),
                            int(rx), keepalive)
    return rows
