"""The heartbeat callback that writes an agent's facts into the control plane.

The only place where the agent meets :mod:`ployz.control`; imported by the daemon when it is
given ``--control``. The machine must already be registered in the control plane (its overlay
address and subnet are cluster facts the agent does not invent).
"""

from __future__ import annotations

from typing import Any

from ployz.agent.heartbeat import HeartbeatCallback
from ployz.control.models import Capacity
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
