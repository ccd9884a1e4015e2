"""WireGuard peers as the kernel holds them (:class:`Peer`) and as they should be
(:class:`PeerConfig`), and the changes that take one to the other (:func:`diff_peers`).

Both sides normalise their public keys (canonical base64), allowed IPs (networks, host bits
cleared, sorted) and endpoints (compressed IP text), so that comparing what the kernel reports
with what the facts ask for does not see a change where there is none and touch a peer, which
would be logged at every resync.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ployz.net.keys import canonical_key

KEEPALIVE_S = 25
"""Persistent keepalive of every peer: keeps NAT mappings open and handshakes fresh."""


@dataclass(frozen=True)
class Endpoint:
    """Where a peer's WireGuard listens: an IP literal (the kernel takes no host names)."""

    ip: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", ipaddress.ip_address(self.ip).compressed)
        if not 0 < self.port < 65536:
            raise ValueError(f"endpoint port {self.port} is not in 1-65535")

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def normalize_allowed_ips(networks: Iterable[str]) -> tuple[str, ...]:
    """Networks as the kernel reports them (host bits cleared), sorted, without duplicates;
    ValueError for a text that is not a network."""
    parsed = {ipaddress.ip_network(text, strict=False) for text in networks}
    ordered = sorted(parsed, key=lambda net: (net.version, int(net.network_address),
                                              net.prefixlen))
    return tuple(net.compressed for net in ordered)


@dataclass(frozen=True)
class PeerConfig:
    """A peer as it should be. ``endpoint`` None leaves the kernel's endpoint as it is (the
    peer's address could not be resolved; it may still reach us and be learnt from its packets)."""

    public_key: str
    endpoint: Endpoint | None
    allowed_ips: tuple[str, ...]
    persistent_keepalive_s: int = KEEPALIVE_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", canonical_key(self.public_key))
        object.__setattr__(self, "allowed_ips", normalize_allowed_ips(self.allowed_ips))


@dataclass(frozen=True)
class Peer:
    """A peer as the kernel holds it (what ``wg show`` prints)."""

    public_key: str
    endpoint: Endpoint | None
    allowed_ips: tuple[str, ...]
    persistent_keepalive_s: int
    latest_handshake: datetime | None
    """None until the first handshake completed."""
    rx_bytes: int
    tx_bytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_ips", normalize_allowed_ips(self.allowed_ips))

    def satisfies(self, wanted: PeerConfig) -> bool:
        return (
            self.public_key == wanted.public_key
            and self.allowed_ips == wanted.allowed_ips
            and self.persistent_keepalive_s == wanted.persistent_keepalive_s
            and (wanted.endpoint is None or self.endpoint == wanted.endpoint)
        )


@dataclass(frozen=True)
class PeerChanges:
    """What to set and remove, each peer at most once, in a stable order (by public key)."""

    added: tuple[PeerConfig, ...] = ()
    updated: tuple[PeerConfig, ...] = ()
    removed: tuple[str, ...] = ()
    """Public keys of peers that are not wanted."""

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def diff_peers(wanted: Iterable[PeerConfig], current: Iterable[Peer]) -> PeerChanges:
    """The changes that make ``current`` (the kernel's peers) equal to ``wanted``.

    Two wanted entries with one public key: the last one counts (the kernel has one peer per
    key)."""
    wanted_by_key = {peer.public_key: peer for peer in wanted}
    current_by_key = {peer.public_key: peer for peer in current}
    added, updated = [], []
    for key in sorted(wanted_by_key):
        peer, present = wanted_by_key[key], current_by_key.get(key)
        if present is None:
            added.append(peer)
        elif not present.satisfies(peer):
            updated.append(peer)
    removed = sorted(key for key in current_by_key if key not in wanted_by_key)
    return PeerChanges(tuple(added), tuple(updated), tuple(removed))
