"""The agent's two links to the control plane: the heartbeat callback that writes its facts,
and the machine facts its overlay follows.

The only place where the agent meets :mod:`ployz.control`; imported by the daemon when it is
given ``--control``. The machine must already be registered in the control plane (its overlay
address, subnet, WireGuard key and endpoint are cluster facts the agent does not invent).
"""

from __future__ import annotations

from typing import Any

from ployz.agent.heartbeat import HeartbeatCallback
from ployz.agent.overlay import PeerFact
from ployz.control.models import Capacity, Machine
from ployz.control.plane import ControlPlane
from ployz.control.url import open_control_plane


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


def control_plane_heartbeat(url: str) -> HeartbeatCallback:
    """The control plane is opened at the first beat, in the heartbeat's own thread, and again
    after a failed open: an agent starts and serves even while its control plane is down."""
    plane: ControlPlane | None = None

    def heartbeat(machine_id: str, facts: dict[str, Any]) -> None:
        nonlocal plane
        if plane is None:
            plane = open_control_plane(url)
        plane.heartbeat(machine_id, capacity_of(facts))

    return heartbeat


class ControlPlaneMachines:
    """:class:`~ployz.agent.overlay.MachineFacts` of the control plane at ``url``.

    Opening it connects (the overlay opens it again after a failure); the watch is made before
    the first read, so no change made after that read can be missed.
    """

    def __init__(self, url: str) -> None:
        self._plane = open_control_plane(url)
        try:
            self._watch = self._plane.watch_machines()
        except BaseException:
            self._plane.close()
            raise

    def machines(self) -> list[PeerFact]:
        return [peer_fact(machine) for machine in self._plane.list_machines()]

    def wait(self, timeout_s: float) -> bool:
        return self._watch.wait(timeout_s)

    def close(self) -> None:
        try:
            self._watch.close()
        finally:
            self._plane.close()


def peer_fact(machine: Machine) -> PeerFact:
    return PeerFact(
        machine_id=machine.id,
        overlay_ip=machine.overlay_ip,
        subnet=machine.subnet,
        wireguard_key=machine.wireguard_key,
        endpoint=machine.endpoint,
    )
