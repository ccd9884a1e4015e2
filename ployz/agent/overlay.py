"""The agent keeps its machine's WireGuard overlay equal to the cluster's machine facts.

Every other machine whose fact has a WireGuard key and an endpoint is a peer, allowed its overlay
address and its subnet; a peer no fact names is removed. A machine whose own fact is gone (it was
removed from the cluster) removes every peer. The wanted peers are compared with what the kernel
holds at each pass, never with what an earlier pass did, so a restarted agent (or a peer changed
by hand) converges the same way and an agent that finds all in place changes nothing.

The agent meets the control plane only in :mod:`ployz.agent.control_link`; here the facts come
through the small :class:`MachineFacts` protocol.
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


class MachineFacts(Protocol):
    """The cluster's machine facts and their changes, as the control plane keeps them."""

    def machines(self) -> list[PeerFact]: ...

    def wait(self, timeout_s: float) -> bool:
        """True as soon as a machine fact changed since the previous wait (or since this was
        opened), False when ``timeout_s`` passed first."""
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


def wanted_peers(machine_id: str, facts: Iterable[PeerFact],
                 resolve: Resolve = resolve_endpoint) -> dict[str, PeerConfig]:
    """The peers this machine should have, by machine id; none if its own fact is missing."""
    facts = list(facts)
    if not any(fact.machine_id == machine_id for fact in facts):
        return {}
    wanted = {}
    for fact in facts:
        if fact.machine_id == machine_id or not fact.wireguard_key or not fact.endpoint:
            continue
        host = ipaddress.ip_address(fact.overlay_ip)
        wanted[fact.machine_id] = PeerConfig(
            public_key=fact.wireguard_key,
            endpoint=resolve(fact.endpoint),
            allowed_ips=(f"{host}/{host.max_prefixlen}", fact.subnet),
        )
    return wanted


def reconcile(link: PeerTable, machine_id: str, facts: Iterable[PeerFact],
              resolve: Resolve = resolve_endpoint) -> PeerChanges:
    """One pass: reads the kernel's peers, applies the difference to the facts, logs each
    change and returns them."""
    facts = list(facts)
    wanted = wanted_peers(machine_id, facts, resolve)
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
    """Runs :func:`reconcile` in its own thread: at start, at every change of the facts and at
    least every ``resync_s``. A failure (control plane down, a netlink error) is logged and the
    pass retried ``resync_s`` later, with the facts and the interface opened anew: the agent
    keeps serving meanwhile."""

    def __init__(self, machine_id: str, open_link: Callable[[], PeerTable],
                 open_facts: Callable[[], MachineFacts],
                 resync_s: float = DEFAULT_RESYNC_S) -> None:
        self.machine_id = machine_id
        self._open_link = open_link
        self._open_facts = open_facts
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
        facts: MachineFacts | None = None
        while not self._stopping.is_set():
            try:
                # Opened in this thread: pyroute2's sockets belong to the thread that uses them.
                if link is None:
                    link = self._open_link()
                if facts is None:
                    facts = self._open_facts()
                reconcile(link, self.machine_id, facts.machines())
                self._wait_for_change(facts)
            except Exception:
                log.exception("overlay of %s: reconcile failed; retrying in %g s",
                              self.machine_id, self._resync_s)
                _closed(link)
                _closed(facts)
                link, facts = None, None
                self._stopping.wait(self._resync_s)
        _closed(link)
        _closed(facts)

    def _wait_for_change(self, facts: MachineFacts) -> None:
        """Until the facts change, the resync is due or the keeper is stopped."""
        deadline = time.monotonic() + self._resync_s
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or facts.wait(min(remaining, _STOP_CHECK_S)):
                return


def _closed(resource: PeerTable | MachineFacts | None) -> None:
    """Closes ``resource`` if open, logging (not raising) a failure: it is being given up."""
    if resource is not None:
        try:
            resource.close()
        except Exception:
            log.exception("closing %r failed", resource)
