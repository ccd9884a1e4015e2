"""Joins and removals whose second write fails, on the real SQLite store with injected faults: the
first write is undone, and when the undo fails too, a retry finishes the job."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ployz.control import (
    ControlPlane,
    ControlPlaneUnavailable,
    MachineExists,
)
from ployz.control.sqlite_store import SqliteStore

OPERATOR = "ed25519:" + base64.b64encode(bytes(32)).decode()
KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
ENDPOINT = "192.0.2.1:51820"


class FaultyStore(SqliteStore):
    """The real SQLite store; each planned fault fails the first write matching it, in order."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.faults: list[tuple[str, str]] = []

    def create(self, kind: str, key: str, value: bytes) -> int:
        self._fault("create", kind)
        return super().create(kind, key, value)

    def update(self, kind: str, key: str, value: bytes, revision: int) -> int:
        self._fault("update", kind)
        return super().update(kind, key, value, revision)

    def _fault(self, op: str, kind: str) -> None:
        if self.faults and self.faults[0] == (op, kind):
            self.faults.pop(0)
            raise ControlPlaneUnavailable(f"injected: {op} of {kind}")


@pytest.fixture
def store(tmp_path: Path) -> FaultyStore:
    return FaultyStore(tmp_path / "control.db")


@pytest.fixture
def cp(store: FaultyStore) -> ControlPlane:
    plane = ControlPlane(store)
    plane.create_cluster("prod", [OPERATOR])
    return plane


def test_a_join_whose_machine_cannot_be_recorded_frees_its_allocation(
    cp: ControlPlane, store: FaultyStore
) -> None:
    store.faults = [("create", "machines")]
    with pytest.raises(ControlPlaneUnavailable, match="injected: create of machines"):
        cp.add_machine("machine-a", KEY_A, ENDPOINT)
    assert cp.get_cluster().allocations == {}
    assert cp.list_machines() == []
    assert cp.add_machine("machine-a", KEY_A, ENDPOINT).overlay_ip == "10.210.0.1"


def test_an_allocation_left_by_a_failed_undo_goes_to_the_same_join_only(
    cp: ControlPlane, store: FaultyStore
) -> None:
    store.faults = [("create", "machines"), ("update", "cluster")]
    with pytest.raises(ControlPlaneUnavailable) as failed:
        cp.add_machine("machine-a", KEY_A, ENDPOINT)
    assert any("stays reserved" in note for note in failed.value.__notes__)
    assert list(cp.get_cluster().allocations) == ["machine-a"]

    with pytest.raises(MachineExists, match="machine 'machine-a' is already a member"):
        cp.add_machine("machine-a", KEY_B, ENDPOINT)
    machine = cp.add_machine("machine-a", KEY_A, ENDPOINT)  # the retried join takes it
    assert (machine.overlay_ip, machine.subnet) == ("10.210.0.1", "10.211.1.0/24")
    assert cp.add_machine("machine-b", KEY_B, ENDPOINT).overlay_ip == "10.210.0.2"


def test_a_removal_that_cannot_free_the_allocation_puts_the_machine_back(
    cp: ControlPlane, store: FaultyStore
) -> None:
    machine = cp.set_lifecycle(cp.add_machine("machine-a", KEY_A, ENDPOINT).id, "draining")
    store.faults = [("update", "cluster")]
    with pytest.raises(ControlPlaneUnavailable, match="injected: update of cluster"):
        cp.remove_machine("machine-a")
    assert cp.get_machine("machine-a") == machine
    assert list(cp.get_cluster().allocations) == ["machine-a"]
    assert cp.remove_machine("machine-a").machine == machine
    assert cp.get_cluster().allocations == {}


def test_a_removal_that_cannot_put_the_machine_back_says_how_to_finish(
    cp: ControlPlane, store: FaultyStore
) -> None:
    cp.set_lifecycle(cp.add_machine("machine-a", KEY_A, ENDPOINT).id, "draining")
    store.faults = [("update", "cluster"), ("create", "machines")]
    with pytest.raises(ControlPlaneUnavailable) as failed:
        cp.remove_machine("machine-a")
    assert any("add it again with the same WireGuard key" in n for n in failed.value.__notes__)
    # As the note says: the address stays reserved until the same machine is added and removed.
    assert cp.add_machine("machine-a", KEY_A, ENDPOINT).overlay_ip == "10.210.0.1"
    cp.set_lifecycle("machine-a", "draining")
    cp.remove_machine("machine-a")
    assert cp.get_cluster().allocations == {}
