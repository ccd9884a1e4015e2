"""Machine facts and connection errors, on both backends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from ployz.control import (
    Capacity,
    ControlPlane,
    ControlPlaneUnavailable,
    InvalidArgument,
    InvalidName,
    Machine,
    UnknownMachine,
    open_control_plane,
)
from ployz.control.models import utcnow


def test_registered_machines_are_listed(cp: ControlPlane, machines) -> None:
    listed = cp.list_machines()
    assert [m.id for m in listed] == list(machines)
    assert {m.lifecycle for m in listed} == {"active"}
    assert cp.get_machine("machine-b").overlay_ip == "10.210.2.1"


def test_heartbeat_records_time_and_capacity(cp: ControlPlane, machines) -> None:
    before = utcnow()
    capacity = Capacity(pool_size=10 << 30, pool_free=8 << 30, pool_used=2 << 30, containers=3)
    beat = cp.heartbeat("machine-a", capacity)
    assert beat.last_heartbeat is not None and beat.last_heartbeat >= before
    assert cp.get_machine("machine-a").capacity == capacity
    assert cp.heartbeat("machine-a").capacity == capacity  # a bare heartbeat keeps the capacity


def test_reregistering_keeps_lifecycle_and_creation(cp: ControlPlane, machines) -> None:
    first = cp.set_lifecycle("machine-a", "draining")
    again = cp.register_machine(
        Machine(id="machine-a", overlay_ip="10.210.9.1", subnet="10.210.9.0/24")
    )
    assert (again.lifecycle, again.created, again.overlay_ip) == (
        "draining",
        first.created,
        "10.210.9.1",
    )
    assert cp.set_lifecycle("machine-a", "active").lifecycle == "active"


def test_unknown_and_malformed_machines_are_refused(cp: ControlPlane, machines) -> None:
    with pytest.raises(UnknownMachine, match="machine-z"):
        cp.get_machine("machine-z")
    with pytest.raises(UnknownMachine):
        cp.heartbeat("machine-z")
    with pytest.raises(UnknownMachine):
        cp.set_lifecycle("machine-z", "draining")
    with pytest.raises(InvalidName):
        cp.get_machine("machine a")
    with pytest.raises(InvalidArgument):
        cp.set_lifecycle("machine-a", "retired")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="overlay_ip"):
        Machine(id="machine-d", overlay_ip="10.0.0.300", subnet="10.0.0.0/24")
    assert [m.id for m in cp.list_machines()] == list(machines)


def test_unreachable_nats_is_a_clear_error() -> None:
    with pytest.raises(ControlPlaneUnavailable, match="no NATS server reachable"):
        open_control_plane("nats://127.0.0.1:1?timeout=1")


def test_sqlite_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneUnavailable, match="no directory"):
        open_control_plane(f"sqlite://{tmp_path}/missing/control.db")


def test_state_survives_reopening(control_url: str) -> None:
    with open_control_plane(control_url) as cp:
        cp.register_machine(Machine(id="machine-a", overlay_ip="10.0.0.1", subnet="10.0.0.0/24"))
    with open_control_plane(control_url) as cp:
        assert cp.get_machine("machine-a").overlay_ip == "10.0.0.1"


def test_listing_while_heartbeats_rewrite_the_facts_finds_each_machine_once(
        cp: ControlPlane, control_url: str, machines) -> None:
    """Two agents heartbeat as fast as they can while the operator lists: every list has each
    machine exactly once (on NATS a KV watch would repeat, miss or lose them all)."""
    stop = threading.Event()

    def beat(machine_id: str) -> None:
        with open_control_plane(control_url) as plane:
            while not stop.is_set():
                plane.heartbeat(machine_id)

    beaters = [threading.Thread(target=beat, args=(m,)) for m in machines[:2]]
    for thread in beaters:
        thread.start()
    try:
        listings = [[m.id for m in cp.list_machines()] for _ in range(150)]
    finally:
        stop.set()
        for thread in beaters:
            thread.join()
    assert all(listing == list(machines) for listing in listings), [
        listing for listing in listings if listing != list(machines)][:3]
