"""What the migration suites start from: a real SQLite control plane with the machines of
``machines`` (machine-a and machine-b unless a module says otherwise), and in-memory agents of
those machines where ``shop/web`` runs on machine-a with its volume ``db``, deployed by a plain
deploy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.control import Capacity, ControlPlane, open_control_plane
from ployz.deploy.apply import deploy
from ployz.deploy.migration.ref import ServiceRef
from tests.unit.conftest import RegisterMachines
from tests.unit.deploy.fake_agents import FakeCluster
from tests.unit.deploy.test_deploy_run import manifest

MACHINES = ["machine-a", "machine-b"]
WEB = ServiceRef("shop", "web")


@pytest.fixture
def machines() -> list[str]:
    return MACHINES


@pytest.fixture
def cp(tmp_path: Path, register_machines: RegisterMachines,
       machines: list[str]) -> Iterator[ControlPlane]:
    with open_control_plane(f"sqlite:///{tmp_path / 'control.db'}") as plane:
        register_machines(plane, machines, Capacity(pool_free=8 << 30))
        yield plane


@pytest.fixture
def agents(cp: ControlPlane, machines: list[str]) -> FakeCluster:
    cluster = FakeCluster(machines)
    for machine in cluster.machines.values():
        machine.images.add("img:1")
    deploy(cp, manifest("1"), cluster, holder="ops")
    return cluster
