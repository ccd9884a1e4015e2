"""The agent keeps its machine's WireGuard overlay, and the routing of services over it, equal
to the cluster's facts.

Every other machine whose fact has a WireGuard key and an endpoint is a peer, allowed its overlay
address, its subnet and the stable address of every service routed to it; a peer no fact names
is removed. A machine whose own fact is gone (it was removed from the cluster) removes every
peer. The wanted peers are compared with what the kernel holds at each pass, never with what an
earlier pass did, so a restarted agent (or a peer changed by hand) converges the same way and an
agent that finds all in place changes nothing.

After the peers, each pass applies the rest of the machine's routing (:class:`LocalRouting`:
service routes, DNS answers, gateway map) and then acknowledges, namespace by namespace, the
commit whose facts it applied: a migration waits for those acknowledgements before it removes
the old instance.

The agent meets the control plane only in :mod:`ployz.agent.control_link`; here the facts come
through the small :class:`ClusterFacts` protocol.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ployz.net.peers import Endpoint, Peer, PeerChanges, PeerConfig, diff_peers
from ployz.transfer.addresses import parse_address

DEFAULT_RESYNC_S = 10.0
_STOP_CHECK_S = 0.5
"""Longest wait on the facts between two looks at the stop flag."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerFact:
    """What the overlay needs of one machine's fact."""

    machine_id: str
    overlay_ip: str
    subnet: str
    wireguard_key: str | None
    endpoint: str | None
    """``host:port`` where the machine's WireGuard listens, as the others reach it."""


@dataclass(frozen=True)
class ServiceFact:
    """What routing needs of one service: its stable address, the machine its route points
    to, and its gateway host and port, if any."""

    namespace: str
    name: str
    address: str
    machine: str
    http: tuple[str, int] | None = None


@dataclass(frozen=True)
class RoutingFacts:
    """One consistent read of what the machine's routing follows."""

    machines: list[PeerFact]
    services: list[ServiceFact]
    versions: dict[str, int]
    """The commit number of each namespace the services were read at."""


class ClusterFacts(Protocol):
    """The cluster's machine and service facts and their changes, as the control plane keeps
    them, and where this machine acknowledges what it applied."""

    def read(self) -> RoutingFacts: ...

    def wait(self, timeout_s: float) -> bool:
        """True as soon as a fact changed since the previous wait (or since this was opened),
        False when ``timeout_s`` passed first."""
        ...

    def acknowledge(self, versions: dict[str, int]) -> None: ...

    def close(self) -> None: ...


class LocalRouting(Protocol):
    """The machine's routing besides its peers (:class:`ployz.agent.routing.ServiceRouting`)."""

    def apply(self, machine_id: str, services: list[ServiceFact]) -> list[str]:
        """Makes it follow ``services``; returns what changed, in words, for the log."""
        ...

    def close(self) -> None: ...


class PeerTable(Protocol):
    """The kernel's peers of the overlay interface (:class:`ployz.net.wireguard.WireGuardLink`).

    A protocol, not that class, so that this module (which the control link imports) does not
    import pyroute2 in agents without an overlay, and the reconcile can be tested without one.
    """

    def peers(self) -> list[Peer]: ...

    def set_peer(self, peer: PeerConfig) -> None: ...

    def remove_peer(self, public_key: str) -> None: ...

    def close(self) -> None: ...


Resolve = Callable[[str], Endpoint | None]


def resolve_endpoint(text: str) -> Endpoint | None:
    """``host:port`` to the IP endpoint the kernel takes; None (logged) if the host name does
    not resolve now: the peer is then kept or added without touching its endpoint."""
    host, port = parse_address(text)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        log.warning("endpoint %s does not resolve (%s); keeping the peer's current endpoint",
                    text, exc.strerror)
        return None
    return Endpoint(str(found[0][4][0]), port)


def _host_route(address: str) -> str:
    host = ipaddress.ip_address(address)
    return f"{host}/{host.max_prefixlen}"


def wanted_peers(machine_id: str, facts: Iterable[PeerFact],
                 resolve: Resolve = resolve_endpoint,
                 services: Iterable[ServiceFact] = ()) -> dict[str, PeerConfig]:
    """The peers this machine should have, by machine id; none if its own fact is missing."""
    facts = list(facts)
    if not any(fact.machine_id == machine_id for fact in facts):
        return {}
    routed: dict[str, list[str]] = {}
    for service in services:
        routed.setdefault(service.machine, []).append(_host_route(service.address))
    wanted = {}
    for fact in facts:
        if fact.machine_id == machine_id or not fact.wireguard_key or not fact.endpoint:
            continue
        wanted[fact.machine_id] = PeerConfig(
            public_key=fact.wireguard_key,
            endpoint=resolve(fact.endpoint),
            allowed_ips=(_host_route(fact.overlay_ip), fact.subnet,
                         *routed.get(fact.machine_id, ())),
        )
    return wanted


def reconcile(link: PeerTable, machine_id: str, facts: Iterable[PeerFact],
              resolve: Resolve = resolve_endpoint,
              services: Iterable[ServiceFact] = ()) -> PeerChanges:
    """One pass: reads the kernel's peers, applies the difference to the facts, logs each
    change and returns them."""
    facts = list(facts)
    wanted = wanted_peers(machine_id, facts, resolve, services)
    names = {peer.public_key: name for name, peer in wanted.items()}
    changes = diff_peers(wanted.values(), link.peers())
    if changes.removed and all(fact.machine_id != machine_id for fact in facts):
        log.warning("machine %s has no fact in the control plane (removed from the cluster): "
                    "removing every WireGuard peer", machine_id)
    for verb, peers in (("added", changes.added), ("updated", changes.updated)):
        for peer in peers:
            link.set_peer(peer)
            log.info("overlay peer %s %s: key %s, endpoint %s, allowed IPs %s",
                     names[peer.public_key], verb, peer.public_key,
                     peer.endpoint or "(unresolved, left as it is)", ", ".join(peer.allowed_ips))
    for key in changes.removed:
        link.remove_peer(key)
        log.info("overlay peer %s removed: no machine fact names it", key)
    return changes


class OverlayKeeper:
    """Runs :func:`reconcile`, then the local routing and the acknowledgement, in its own
    thread: at start, at every change of the facts and at least every ``resync_s``. A failure
    (control plane down, a netlink error, the gateway away) is logged and the pass retried
    ``resync_s`` later, with everything opened anew, and nothing acknowledged meanwhile: the
    agent keeps serving."""

    def __init__(self, machine_id: str, open_link: Callable[[], PeerTable],
                 open_facts: Callable[[], ClusterFacts],
                 resync_s: float = DEFAULT_RESYNC_S,
                 open_routing: Callable[[], LocalRouting] | None = None) -> None:
        self.machine_id = machine_id
        self._open_link = open_link
        self._open_facts = open_facts
        self._open_routing = open_routing
        self._resync_s = resync_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ployz-overlay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Returns once the thread finished its pass in progress (a wait is cut short)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        link: PeerTable | None = None
        facts: ClusterFacts | None = None
        routing: LocalRouting | None = None
        acknowledged: dict[str, int] = {}
        while not self._stopping.is_set():
            try:
                # Opened in this thread: pyroute2's sockets belong to the thread that uses them.
                if link is None:
                    link = self._open_link()
                if facts is None:
                    facts = self._open_facts()
                    acknowledged = {}
                if routing is None and self._open_routing is not None:
                    routing = self._open_routing()
                read = facts.read()
                reconcile(link, self.machine_id, read.machines, services=read.services)
                if routing is not None:
                    for change in routing.apply(self.machine_id, read.services):
                        log.info("routing: %s", change)
                if read.versions != acknowledged:
                    facts.acknowledge(read.versions)
                    acknowledged = read.versions
                self._wait_for_change(facts)
            except Exception:
                log.exception("overlay of %s: reconcile failed; retrying in %g s",
                              self.machine_id, self._resync_s)
                for resource in (link, facts, routing):
                    _closed(resource)
                link, facts, routing = None, None, None
                self._stopping.wait(self._resync_s)
        for resource in (link, facts, routing):
            _closed(resource)

    def _wait_for_change(self, facts: ClusterFacts) -> None:
        """Until the facts change, the resync is due or the keeper is stopped."""
        deadline = time.monotonic() + self._resync_s
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or facts.wait(min(remaining, _STOP_CHECK_S)):
                return


def _closed(resource: PeerTable | ClusterFacts | LocalRouting | None) -> None:
    """Closes ``resource`` if open, logging (not raising) a failure: it is being given up."""
    if resource is not None:
        try:
            resource.close()
        except Exception:
            log.exception("closing %r failed", resource)
