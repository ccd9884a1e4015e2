"""A kernel WireGuard interface through netlink (pyroute2): the interface itself, its address
and its peers. Nothing else in ployz touches the machine's network, and nothing here runs ``ip``
or ``wg``: a subprocess per peer per resync would cost more than the reconcile, and parsing their
output is what the netlink messages spare us.

pyroute2 is untyped; this module is the typed boundary: what leaves it is :class:`Peer`,
:class:`PeerConfig` and the errors of :mod:`ployz.net.errors`.

Only the in-kernel WireGuard is driven (generic netlink family ``wireguard``); wireguard-go
speaks a different interface (a UNIX socket) and is not supported.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pyroute2 import IPRoute, WireGuard  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import (  # type: ignore[import-untyped]
    NetlinkError as PyrouteNetlinkError,
)

from ployz.net.errors import NetlinkError, NotWireGuard, WireGuardUnavailable
from ployz.net.keys import clamped
from ployz.net.netlink import translated
from ployz.net.peers import Endpoint, Peer, PeerConfig

IFNAME_MAX = 15
"""The kernel's limit on an interface name (IFNAMSIZ less the terminating NUL)."""
_IFF_UP = 0x1


def check_ifname(ifname: str) -> str:
    """``ifname`` if the kernel would accept it as an interface name; ValueError otherwise."""
    if not 0 < len(ifname) <= IFNAME_MAX or any(c in ifname for c in "/: \t\n") or ifname in (
        ".", ".."
    ):
        raise ValueError(f"{ifname!r} is not an interface name (1-{IFNAME_MAX} characters, "
                         "no '/', ':' or whitespace)")
    return ifname


class WireGuardLink:
    """One WireGuard interface of the caller's network namespace.

    Holds netlink sockets that pyroute2 binds to the thread that first uses them (their asyncio
    loop is thread-local, and cannot run inside a thread that already runs one): use an instance
    from one thread, outside a running event loop, and close it there.
    """

    def __init__(self, ifname: str) -> None:
        self.ifname = check_ifname(ifname)
        self._ipr: Any = IPRoute()
        self._wg: Any = None

    def close(self) -> None:
        if self._wg is not None:
            self._wg.close()
        self._ipr.close()

    def __enter__(self) -> WireGuardLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the interface ---------------------------------------------------------------------

    def ensure(self, private_key: str, listen_port: int, address: str) -> list[str]:
        """Makes the interface exist with this private key, listen port and address (a CIDR
        whose prefix is the whole overlay, so the kernel routes the overlay through it), and be
        up. Other addresses on it are removed (it is ours; the overlay address may have moved).

        Returns what it changed, in words, for the log: empty when all was so already.
        """
        private_key = clamped(private_key)
        wanted = ipaddress.ip_interface(address)
        changes = []
        index = self._index()
        if index is None:
            self._create()
            changes.append("created")
            index = self._index()
            assert index is not None
        link = self._link(index)
        kind = _kind_of(link)
        if kind != "wireguard":
            raise NotWireGuard(self.ifname, kind)
        device = self._device()
        current_key = device.get_attr("WGDEVICE_A_PRIVATE_KEY")  # absent until one is set
        if current_key is None or _text(current_key) != private_key:
            with self._netlink("set the private key"):
                self._wireguard().set(self.ifname, private_key=private_key)
            changes.append("private key set")
        if device.get_attr("WGDEVICE_A_LISTEN_PORT") != listen_port:
            with self._netlink(f"set listen port {listen_port}"):
                self._wireguard().set(self.ifname, listen_port=listen_port)
            changes.append(f"listen port {listen_port}")
        changes += self._ensure_address(index, wanted)
        if not link["flags"] & _IFF_UP:
            with self._netlink("bring the interface up"):
                self._ipr.link("set", index=index, state="up")
            changes.append("up")
        return changes

    # --- peers -----------------------------------------------------------------------------

    def peers(self) -> list[Peer]:
        """The kernel's peers, by public key."""
        with self._netlink("list the peers"):
            return peers_of(self._wireguard().info(self.ifname))

    def set_peer(self, peer: PeerConfig) -> None:
        """Adds the peer or replaces its endpoint (unless None), allowed IPs and keepalive."""
        spec: dict[str, Any] = {
            "public_key": peer.public_key,
            "persistent_keepalive": peer.persistent_keepalive_s,
            "allowed_ips": list(peer.allowed_ips),
            "replace_allowed_ips": True,
        }
        if peer.endpoint is not None:
            spec["endpoint_addr"] = peer.endpoint.ip
            spec["endpoint_port"] = peer.endpoint.port
        with self._netlink(f"set peer {peer.public_key}"):
            self._wireguard().set(self.ifname, peer=spec)

    def remove_peer(self, public_key: str) -> None:
        """Removes the peer; removing a peer the interface does not have is no error."""
        with self._netlink(f"remove peer {public_key}"):
            self._wireguard().set(self.ifname, peer={"public_key": public_key, "remove": True})

    # --- internals -------------------------------------------------------------------------

    def _netlink(self, operation: str) -> contextlib.AbstractContextManager[None]:
        return translated(operation, self.ifname)

    def _create(self) -> None:
        """Creating the link loads the wireguard module if it is loadable: a kernel that does
        not know the link kind has no WireGuard."""
        try:
            self._ipr.link("add", ifname=self.ifname, kind="wireguard")
        except PyrouteNetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                raise WireGuardUnavailable("no link kind 'wireguard'") from exc
            raise NetlinkError("create the WireGuard interface", self.ifname, exc.code) from exc

    def _wireguard(self) -> Any:
        """The generic netlink socket, opened at first use: only after the interface exists may
        a missing family mean the kernel lacks WireGuard (creating the link loads the module)."""
        if self._wg is None:
            try:
                self._wg = WireGuard()
            except PyrouteNetlinkError as exc:
                if exc.code == errno.ENOENT:
                    raise WireGuardUnavailable("no generic netlink family 'wireguard'") from exc
                raise NetlinkError("open the WireGuard netlink family", self.ifname,
                                   exc.code) from exc
        return self._wg

    def _index(self) -> int | None:
        with self._netlink("look up the interface"):
            found = self._ipr.link_lookup(ifname=self.ifname)
        return int(found[0]) if found else None

    def _link(self, index: int) -> Any:
        with self._netlink("read the interface"):
            (link,) = self._ipr.link("get", index=index)
        return link

    def _device(self) -> Any:
        with self._netlink("read the WireGuard device"):
            messages = list(self._wireguard().info(self.ifname))
        return messages[0]

    def _ensure_address(self, index: int, wanted: ipaddress.IPv4Interface | ipaddress.IPv6Interface
                        ) -> list[str]:
        changes = []
        with self._netlink("list the addresses"):
            present = [ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
                       for msg in self._ipr.get_addr(index=index)]
        for other in present:
            if other != wanted and not other.is_link_local:
                with self._netlink(f"remove address {other}"):
                    self._ipr.addr("del", index=index, address=str(other.ip),
                                   prefixlen=other.network.prefixlen)
                changes.append(f"address {other} removed")
        if wanted not in present:
            with self._netlink(f"add address {wanted}"):
                self._ipr.addr("add", index=index, address=str(wanted.ip),
                               prefixlen=wanted.network.prefixlen)
            changes.append(f"address {wanted}")
        return changes


_PEER_ATTRS = {
    "endpoint": "WGPEER_A_ENDPOINT",
    "keepalive": "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL",
    "handshake": "WGPEER_A_LAST_HANDSHAKE_TIME",
    "rx_bytes": "WGPEER_A_RX_BYTES",
    "tx_bytes": "WGPEER_A_TX_BYTES",
}


def _text(key: bytes | str) -> str:
    """pyroute2 decodes keys to base64 bytes."""
    return key.decode() if isinstance(key, bytes) else key


def _kind_of(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def peers_of(messages: Iterable[Any]) -> list[Peer]:
    """The peers of a device dump (pyroute2 messages), by public key. A large dump spans
    several messages, and one peer's allowed IPs may go on in the next message under the same
    key: they are merged."""
    merged: dict[str, dict[str, Any]] = {}
    for message in messages:
        for nla in message.get_attr("WGDEVICE_A_PEERS") or ():
            fields = merged.setdefault(_text(nla.get_attr("WGPEER_A_PUBLIC_KEY")),
                                       {"allowed_ips": []})
            fields["allowed_ips"] += [ip["addr"] for ip in
                                      nla.get_attr("WGPEER_A_ALLOWEDIPS") or ()]
            for name, attr in _PEER_ATTRS.items():
                value = nla.get_attr(attr)
                if value is not None:
                    fields[name] = value
    return [_peer(key, fields) for key, fields in sorted(merged.items())]


def _peer(public_key: str, fields: dict[str, Any]) -> Peer:
    endpoint = fields.get("endpoint")
    handshake = fields.get("handshake")
    seconds = handshake["tv_sec"] + handshake["tv_nsec"] / 1e9 if handshake else 0
    return Peer(
        public_key=public_key,
        endpoint=Endpoint(endpoint["addr"], endpoint["port"]) if endpoint else None,
        allowed_ips=tuple(fields["allowed_ips"]),
        persistent_keepalive_s=fields.get("keepalive", 0),
        latest_handshake=datetime.fromtimestamp(seconds, UTC) if seconds else None,
        rx_bytes=fields.get("rx_bytes", 0),
        tx_bytes=fields.get("tx_bytes", 0),
    )
