"""The kernel routes that send services' stable addresses over the overlay.

A service's address sits on its machine's service bridge (Docker's ``ployz-svc``, which carries
the cluster's whole service range as a connected route). Every other machine routes that one
address, a ``/32``, through its WireGuard interface, whose peer for the service's machine
allows it; the service's own machine has no such route, so the bridge takes the traffic. A
migration moves the ``/32``s, never the address.

The routes this module adds carry their own routing protocol number (:data:`ROUTE_PROTOCOL`), so
a pass lists exactly its own routes and never touches another's; as with the peers, each pass
compares with what the kernel holds, so a restarted agent converges the same way.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import (  # type: ignore[import-untyped]
    NetlinkError as PyrouteNetlinkError,
)

from ployz.net.errors import NetlinkError
from ployz.net.netlink import translated

ROUTE_PROTOCOL = 74
"""The ``proto`` of ployz's service routes (unassigned in iproute2's rt_protos; ``ip route show
proto 74`` lists them)."""
_SCOPE_LINK = 253
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True)
class RouteChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class ServiceRoutes:
    """The service routes of one interface (the overlay's), in the caller's network namespace.

    Like :class:`~ployz.net.wireguard.WireGuardLink`, its netlink socket belongs to the thread
    that uses it."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self._ipr: Any = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def routes(self) -> set[str]:
        """The ``/32``s this module routes through the interface now."""
        index = self._index()
        with self._netlink("list the service routes"):
            found = self._ipr.get_routes(family=socket.AF_INET, proto=ROUTE_PROTOCOL)
        return {f"{route.get_attr('RTA_DST')}/{route['dst_len']}" for route in found
                if route.get_attr("RTA_OIF") == index}

    def apply(self, addresses: Iterable[str]) -> RouteChanges:
        """Makes the interface route exactly ``addresses`` (each as a ``/32``); returns what
        it changed."""
        wanted = {f"{ipaddress.ip_address(a)}/32" for a in addresses}
        present = self.routes()
        index = self._index()
        added = sorted(wanted - present)
        removed = sorted(present - wanted)
        for destination in added:
            with self._netlink(f"add the route of {destination}"):
                self._ipr.route("replace", dst=destination, oif=index, proto=ROUTE_PROTOCOL,
                                scope=_SCOPE_LINK)
        for destination in removed:
            try:
                self._ipr.route("del", dst=destination, oif=index, proto=ROUTE_PROTOCOL,
                                scope=_SCOPE_LINK)
            except PyrouteNetlinkError as exc:
                if exc.code != errno.ESRCH:  # ESRCH: removed by someone else meanwhile
                    raise NetlinkError(f"remove the route of {destination}", self.ifname,
                                       exc.code) from exc
        return RouteChanges(tuple(added), tuple(removed))

    def _index(self) -> int:
        with self._netlink("look up the interface"):
            found = self._ipr.link_lookup(ifname=self.ifname)
        if not found:
            raise NetlinkError("look up the interface", self.ifname, errno.ENODEV)
        return int(found[0])

    def _netlink(self, operation: str) -> contextlib.AbstractContextManager[None]:
        return translated(operation, self.ifname)


def enable_forwarding(path: Path = IP_FORWARD) -> bool:
    """Turns IPv4 forwarding on in this network namespace (the machine forwards between the
    overlay and its service bridge); returns whether it was off."""
    if path.read_text().strip() == "1":
        return False
    path.write_text("1\n")
    return True
