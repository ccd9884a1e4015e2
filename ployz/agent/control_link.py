"""The agent's two links to the control plane: the heartbeat callback that writes its facts,
and the machine and service facts its overlay and routing follow (and acknowledge).

The only place where the agent meets :mod:`ployz.control`; imported by the daemon when it is
given ``--control``. The machine must already be registered in the control plane (its overlay
address, subnet, WireGuard key and endpoint are cluster facts the agent does not invent).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from ployz.agent.heartbeat import HeartbeatCallback
from ployz.agent.overlay import PeerFact, RoutingFacts, ServiceFact
from ployz.control.errors import ControlPlaneMoved
from ployz.control.models import Capacity, Machine, NamespaceState
from ployz.control.plane import ControlPlane
from ployz.control.store import StoreWatch
from ployz.control.url import open_control_plane, redact_url
from ployz.private_files import write_private

log = logging.getLogger(__name__)


class ControlLocation:
    """Where the agent reaches the control plane: the URL it was given, until the control plane
    moves (from the first machine's single JetStream server onto the replicated servers, when
    the third machine joins). An open then follows the move, and the new URL replaces the old
    one in the agent's control file: the agent restarted, and ``ployzctl`` on the machine, go
    there directly, and no longer depend on the old server."""

    def __init__(self, url: str, control_file: Path | None = None) -> None:
        self._url = url
        self._file = control_file
        self._lock = threading.Lock()  # the heartbeat and the overlay open from two threads

    def open(self) -> ControlPlane:
        with self._lock:
            url = self._url
        plane = open_control_plane(url)
        if plane.location != url:
            with self._lock:
                self._url = plane.location
                if self._file is not None:
                    write_private(self._file, plane.location + "\n")
            log.info("the control plane moved to %s; %s now names it",
                     redact_url(plane.location), self._file or "this agent")
        return plane


def capacity_of(facts: dict[str, Any]) -> Capacity | None:
    """The control plane's capacity fact, or None (keep the last known) when the pool could not
    be measured."""
    if facts["pool_free"] is None or facts["pool_used"] is None:
        return None
    return Capacity(
        pool_size=facts["pool_free"] + facts["pool_used"],
        pool_free=facts["pool_free"],
        pool_used=facts["pool_used"],
        containers=facts["containers"] or 0,
        runtime_up=facts["containers"] is not None,
    )


def control_plane_heartbeat(location: ControlLocation) -> HeartbeatCallback:
    """The control plane is opened at the first beat, in the heartbeat's own thread, and again
    after a failed open: an agent starts and serves even while its control plane is down. A
    beat refused because the control plane moved is sent again where it went."""
    plane: ControlPlane | None = None

    def heartbeat(machine_id: str, facts: dict[str, Any]) -> None:
        nonlocal plane
        if plane is None:
            plane = location.open()
        try:
            plane.heartbeat(machine_id, capacity_of(facts))
        except ControlPlaneMoved:
            plane.close()
            plane = None
            plane = location.open()
            plane.heartbeat(machine_id, capacity_of(facts))

    return heartbeat


class ControlPlaneFacts:
    """:class:`~ployz.agent.overlay.ClusterFacts` of the control plane at ``location``.

    Opening it connects (the overlay opens it again after a failure); the watch is made before
    the first read, so no change made after that read can be missed. A store sealed by a move no
    longer changes: a read that finds it moved opens the facts anew where the control plane
    went, with a new watch, before it reads.
    """

    def __init__(self, location: ControlLocation, machine_id: str) -> None:
        self._location = location
        self._machine_id = machine_id
        self._plane, self._watch = self._open()

    def _open(self) -> tuple[ControlPlane, StoreWatch]:
        plane = self._location.open()
        try:
            return plane, plane.watch_routing()
        except BaseException:
            plane.close()
            raise

    def read(self) -> RoutingFacts:
        if self._plane.moved_to() is not None:
            self.close()
            self._plane, self._watch = self._open()
        namespaces = self._plane.list_namespaces()
        return RoutingFacts(
            machines=[peer_fact(machine) for machine in self._plane.list_machines()],
            services=[fact for state in namespaces for fact in service_facts(state)],
            versions={state.namespace: state.commit_seq for state in namespaces},
        )

    def wait(self, timeout_s: float) -> bool:
        return self._watch.wait(timeout_s)

    def acknowledge(self, versions: dict[str, int]) -> None:
        self._plane.acknowledge_routes(self._machine_id, versions)

    def close(self) -> None:
        try:
            self._watch.close()
        finally:
            self._plane.close()


def service_facts(state: NamespaceState) -> list[ServiceFact]:
    """The namespace's services that have an address, each where its route points."""
    facts = []
    for name, service in sorted(state.services.items()):
        if service.address is None:
            continue
        route = state.routes.get(name)
        http = (service.http.host, service.http.port) if service.http is not None else None
        facts.append(ServiceFact(namespace=state.namespace, name=name, address=service.address,
                                 machine=route.machine if route else service.machine,
                                 http=http))
    return facts


def peer_fact(machine: Machine) -> PeerFact:
    return PeerFact(
        machine_id=machine.id,
        overlay_ip=machine.overlay_ip,
        subnet=machine.subnet,
        wireguard_key=machine.wireguard_key,
        endpoint=machine.endpoint,
    )
