"""peers_of on real pyroute2 messages (encoded, then decoded as if read from the kernel): keys
come back as base64 bytes, and one peer may span two messages of a large dump."""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime
from typing import Any

from pyroute2.netlink.generic.wireguard import wgmsg  # type: ignore[import-untyped]

from ployz.net.peers import Endpoint, Peer
from ployz.net.wireguard import peers_of

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(32, 64))).decode()


def allowed_ip(network: str) -> dict[str, Any]:
    address, prefix = network.split("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {"attrs": [("WGALLOWEDIP_A_FAMILY", family),
                      ("WGALLOWEDIP_A_IPADDR", socket.inet_pton(family, address)),
                      ("WGALLOWEDIP_A_CIDR_MASK", int(prefix))]}


def peer(key: str, *attrs: tuple[str, Any], allowed: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"attrs": [("WGPEER_A_PUBLIC_KEY", {"value": key.encode()}), *attrs,
                      ("WGPEER_A_ALLOWEDIPS", [allowed_ip(n) for n in allowed])]}


def from_kernel(*peers: dict[str, Any]) -> Any:
    message = wgmsg()
    message["cmd"] = 0
    message["version"] = 1
    message["attrs"] = [("WGDEVICE_A_IFNAME", "wg0"), ("WGDEVICE_A_PEERS", list(peers))]
    message.encode()
    received = wgmsg(message.data)
    received.decode()
    return received


def test_a_peer_continued_in_the_next_message_is_one_peer():
    first = from_kernel(peer(KEY_A, ("WGPEER_A_ENDPOINT", {"addr": "10.98.0.2", "port": 51820}),
                             ("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25),
                             ("WGPEER_A_LAST_HANDSHAKE_TIME",
                              {"tv_sec": 1_780_000_000, "tv_nsec": 0}),
                             ("WGPEER_A_RX_BYTES", 92), ("WGPEER_A_TX_BYTES", 148),
                             allowed=("10.212.0.2/32",)))
    second = from_kernel(peer(KEY_A, allowed=("10.213.2.0/24", "fd11:2::/64")),
                         peer(KEY_B, allowed=("10.212.0.3/32",)))
    assert peers_of([first, second]) == [
        Peer(KEY_A, Endpoint("10.98.0.2", 51820), ("10.212.0.2/32", "10.213.2.0/24",
                                                  "fd11:2::/64"),
             25, datetime.fromtimestamp(1_780_000_000, UTC), 92, 148),
        Peer(KEY_B, None, ("10.212.0.3/32",), 0, None, 0, 0),
    ]


def test_a_device_without_peers_has_none():
    message = wgmsg()
    message["cmd"] = 0
    message["version"] = 1
    message["attrs"] = [("WGDEVICE_A_IFNAME", "wg0"), ("WGDEVICE_A_LISTEN_PORT", 51820)]
    message.encode()
    received = wgmsg(message.data)
    received.decode()
    assert peers_of([received]) == []
