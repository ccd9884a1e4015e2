"""Fixtures shared by the unit suites that plan against a real SQLite control plane."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable

import pytest

from ployz.control import Capacity, ControlPlane, Machine

RegisterMachines = Callable[[ControlPlane, Iterable[str], Capacity], None]


TRUST = "ed25519:" + base64.b64encode(bytes(32)).decode()


@pytest.fixture
def register_machines() -> RegisterMachines:
    """Makes the cluster (services' addresses come from it) and joins machines to the control
    plane with overlay addresses 10.210.0.2, .3, ... and one heartbeat reporting ``capacity``,
    as their agents would."""

    def register(plane: ControlPlane, machine_ids: Iterable[str], capacity: Capacity) -> None:
        plane.create_cluster("test", [TRUST])
        for i, machine_id in enumerate(machine_ids, start=2):
            plane.register_machine(Machine(id=machine_id, overlay_ip=f"10.210.0.{i}",
                                           subnet=f"10.210.{i}.0/24"))
            plane.heartbeat(machine_id, capacity)

    return register
