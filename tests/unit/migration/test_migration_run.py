"""A migration's phases as a deploy run, against in-memory agents and a real SQLite control
plane: the move itself; a failure at every phase boundary aborts with the service on its source
and nothing left on the target; a ``ployzctl`` killed at any phase is settled by ``apply`` run
again; a cleanup failure is finished by the next run; a drain moves through the same run.
At every point the control plane names exactly one owner of the volume."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ployz.agent.errors import remote_error
from ployz.control import Capacity, ControlPlane, deploy_lock_name
from ployz.control.errors import StaleFencingToken
from ployz.deploy.apply import deploy
from ployz.deploy.drain import candidates, drain
from ployz.deploy.events import Event
from ployz.deploy.migration.apply import migrate
from ployz.deploy.migration.errors import MigrationAborted, MigrationFailedAfterCommit
from ployz.deploy.migration.plan import PHASES
from tests.unit.conftest import RegisterMachines
from tests.unit.deploy.fake_agents import FakeCluster
from tests.unit.deploy.test_deploy_run import Killed, killed_at, manifest, recorded
from tests.unit.migration.conftest import MACHINES, WEB


def on_source(cp: ControlPlane, agents: FakeCluster) -> None:
    """What an abort promises: the service runs on machine-a and owns its volume there, the
    target kept nothing, no migration snapshot or hold is left, and the lock is free."""
    a, b = agents.machines["machine-a"], agents.machines["machine-b"]
    assert [c.state for c in a.containers.values()] == ["running"]
    assert b.containers == {} and list(b.datasets) == ["machine-b"]
    source = a.datasets["machine-a/shop.db"]
    assert source.snapshots == [] and not any(source.holds.values())
    state = cp.namespace("shop")
    assert (state.volumes["db"].owner, state.routes["web"].machine) == ("machine-a", "machine-a")
    assert state.transfers == {}
    lease = cp.get_lease(deploy_lock_name("shop"))
    assert lease is not None and lease.released


def moved(cp: ControlPlane, agents: FakeCluster) -> None:
    """The migration is complete: machine-b owns the volume and runs the only container, with
    the evidence of the final send; machine-a kept nothing; no migration snapshot is left."""
    a, b = agents.machines["machine-a"], agents.machines["machine-b"]
    assert a.containers == {} and list(a.datasets) == ["machine-a"]
    assert [c.state for c in b.containers.values()] == ["running"]
    assert b.datasets["machine-b/shop.db"].snapshots == []
    assert b.datasets["machine-b/shop.db"].props["quota"] == 1 << 30
    state = cp.namespace("shop")
    assert (state.volumes["db"].owner, state.volumes["db"].dataset) == (
        "machine-b", "machine-b/shop.db")
    assert state.routes["web"].machine == "machine-b"
    (evidence,) = state.transfers.values()
    assert (evidence.source, evidence.target) == ("machine-a", "machine-b")
    lease = cp.get_lease(deploy_lock_name("shop"))
    assert lease is not None and lease.released


def test_the_migration_moves_service_and_volume(cp: ControlPlane, agents: FakeCluster) -> None:
    agents.machines["machine-a"].datasets["machine-a/shop.db"].written = 16 << 20
    events: list[dict[str, Any]] = []
    result = migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    assert (result.source, result.target, result.commit_seq) == ("machine-a", "machine-b", 2)
    moved(cp, agents)
    assert [e["phase"] for e in events if e["event"] == "phase"] == list(PHASES)
    sends = [(e["kind"], e["round"]) for e in events
             if e["event"] == "transfer" and e["state"] == "done"]
    assert sends == [("full", 1), ("final", 2)]
    record = cp.get_deploy(result.deploy_id)
    assert (record.kind, record.status, record.phase) == ("migrate", "committed", "done")


CORRUPT = remote_error("transfer.StreamChecksumMismatch", "the stream's checksum differs", {})
"""A failure of a send that resuming cannot fix (an agent out of reach is resumed, below)."""
FAILURES = [
    ("pre-copy", "machine-b", "transfer.receive", CORRUPT),
    ("pre-copy", "machine-a", "transfer.send", CORRUPT),
    ("fence", "machine-a", "containers.stop", None),
    ("fence", "machine-a", "zfs.snapshot", None),
    ("final-send", "machine-a", "transfer.send", CORRUPT),
    ("start", "machine-b", "containers.start", None),
    ("start", "machine-b", "containers.wait_ready", None),
]


@pytest.mark.parametrize(("phase", "machine", "call", "error"), FAILURES)
def test_a_failure_at_each_phase_aborts_with_the_source_intact(
        cp: ControlPlane, agents: FakeCluster, phase: str, machine: str, call: str,
        error: BaseException | None) -> None:
    def emit(event: Event) -> None:
        if event.to_json() == {"event": "phase", "phase": phase}:
            agents.fail_on(machine, call, error)

    with pytest.raises(MigrationAborted) as aborted:
        migrate(cp, agents, WEB, "machine-b", emit=emit)
    assert aborted.value.step == phase and aborted.value.left == []
    on_source(cp, agents)
    record = cp.get_deploy(aborted.value.deploy_id)
    assert (record.status, record.detail["rolled_back"]) == ("failed", True)
    migrate(cp, agents, WEB, "machine-b")  # the cause gone, it goes through
    moved(cp, agents)


@pytest.mark.parametrize("call", ["transfer.send", "transfer.receive"])
def test_an_agent_out_of_reach_during_a_send_is_waited_for_and_the_send_resumed(
        cp: ControlPlane, agents: FakeCluster, call: str) -> None:
    machine = "machine-a" if call == "transfer.send" else "machine-b"
    events: list[dict[str, Any]] = []

    def emit(event: Event) -> None:
        recorded(events)(event)
        if event.to_json() == {"event": "phase", "phase": "pre-copy"}:
            agents.fail_on(machine, call)  # the agent dies as the send begins, and is back

    migrate(cp, agents, WEB, "machine-b", emit=emit)
    moved(cp, agents)
    (interrupted,) = [e for e in events if e.get("state") == "interrupted"]
    assert (interrupted["kind"], interrupted["volume"]) == ("full", "db")
    assert "agent out of reach" in interrupted["reason"]


def test_a_lock_lost_before_the_commit_aborts(cp: ControlPlane, agents: FakeCluster,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def commit(*args: Any, **kwargs: Any) -> Any:
        raise StaleFencingToken("deploy-lock:shop", 1, "held by another")

    monkeypatch.setattr(cp, "commit", commit)
    with pytest.raises(MigrationAborted) as aborted:
        migrate(cp, agents, WEB, "machine-b")
    assert aborted.value.step == "commit" and "lock-lost" in str(aborted.value)
    monkeypatch.undo()
    on_source(cp, agents)


def test_what_a_dead_target_cannot_undo_is_named_and_settled_by_the_next_run(
        cp: ControlPlane, agents: FakeCluster) -> None:
    def emit(event: Event) -> None:
        if event.to_json() == {"event": "phase", "phase": "start"}:
            agents.fail_on("machine-b", "containers.start")
        if event.KIND == "aborting":  # the target's agent is gone for the rollback
            for call in ("containers.list", "zfs.exists"):
                agents.fail_on("machine-b", call)

    with pytest.raises(MigrationAborted) as aborted:
        migrate(cp, agents, WEB, "machine-b", emit=emit)
    assert aborted.value.left and all("machine-b" in left for left in aborted.value.left)
    assert cp.get_deploy(aborted.value.deploy_id).detail["rolled_back"] is False
    assert cp.namespace("shop").volumes["db"].owner == "machine-a"

    events: list[dict[str, Any]] = []
    migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    (rolled_back,) = [e for e in events if e["event"] == "rolled-back"]
    assert rolled_back["deploy_id"] == aborted.value.deploy_id and rolled_back["left"] == []
    moved(cp, agents)


@pytest.mark.parametrize("phase", PHASES)
def test_killed_at_a_phase_boundary_then_apply_again_completes(
        cp: ControlPlane, agents: FakeCluster, phase: str) -> None:
    with pytest.raises(Killed):
        migrate(cp, agents, WEB, "machine-b", emit=killed_at(phase, []))
    owners = cp.namespace("shop").volumes["db"].owner
    assert owners == ("machine-b" if phase == "cleanup" else "machine-a")

    events: list[dict[str, Any]] = []
    migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    recovered = [e["action"] for e in events if e["event"] == "recover"]
    if phase == "lock":  # killed before it began: nothing to settle
        assert recovered == []
    else:
        assert recovered == ["cleanup" if phase == "cleanup" else "roll-back"]
    if phase == "cleanup":
        assert not [e for e in events if e["event"] == "start"]  # finished, not run again
    moved(cp, agents)


def test_a_failed_cleanup_is_finished_by_the_next_apply(cp: ControlPlane,
                                                        agents: FakeCluster) -> None:
    def emit(event: Event) -> None:
        if event.to_json() == {"event": "phase", "phase": "cleanup"}:
            agents.fail_on("machine-a", "containers.remove")

    with pytest.raises(MigrationFailedAfterCommit) as failed:
        migrate(cp, agents, WEB, "machine-b", emit=emit)
    assert cp.get_deploy(failed.value.deploy_id).status == "failed-after-commit"
    assert cp.namespace("shop").volumes["db"].owner == "machine-b"
    events: list[dict[str, Any]] = []
    migrate(cp, agents, WEB, "machine-b", emit=recorded(events))
    assert [e["action"] for e in events if e["event"] == "recover"] == ["cleanup"]
    moved(cp, agents)


def test_a_drain_moves_the_machines_services_through_the_same_run(
        cp: ControlPlane, agents: FakeCluster) -> None:
    (outcome,) = drain(cp, agents, "machine-a", migrate_services=True)
    assert (outcome.service, outcome.target, outcome.status) == ("shop/web", "machine-b",
                                                                 "moved")
    moved(cp, agents)
    assert cp.get_machine("machine-a").lifecycle == "draining"


def test_a_drain_does_not_pick_a_machine_without_a_container_runtime(
        cp: ControlPlane, register_machines: RegisterMachines) -> None:
    """machine-c has the most free space but its agent reaches no Docker: machine-b is chosen."""
    register_machines(cp, ["machine-c"], Capacity(pool_free=64 << 30, runtime_up=False))
    assert candidates(cp, "machine-a") == ["machine-b"]


def test_a_parallel_drain_sets_aside_the_room_promised_to_the_moves_under_way(
        cp: ControlPlane, register_machines: RegisterMachines) -> None:
    """Two moves at once, each of a 1 GiB volume (1.1 GiB with the margin): machine-b, with
    the most room, can take only one of them at a time, so the other goes to machine-c; the
    bandwidth limit is shared by the two."""
    register_machines(cp, ["machine-c"], Capacity(pool_free=1300 << 20))
    cluster = FakeCluster([*MACHINES, "machine-c"])
    cluster.machines["machine-b"].free = 1500 << 20
    cluster.machines["machine-c"].free = 1300 << 20
    cp.heartbeat("machine-b", Capacity(pool_free=1500 << 20))
    for machine in cluster.machines.values():
        machine.images.add("img:1")
    for namespace in ("shop", "blog"):
        deploy(cp, manifest("1").model_copy(update={"namespace": namespace}), cluster,
               holder="ops")
        cluster.machines["machine-a"].datasets[f"machine-a/{namespace}.db"].props[
            "referenced"] = 1 << 30
    cluster.send_barrier = threading.Barrier(2)
    outcomes = drain(cp, cluster, "machine-a", migrate_services=True, parallel=2,
                     bwlimit=20e6)
    assert [(o.service, o.status) for o in outcomes] == [("blog/web", "moved"),
                                                         ("shop/web", "moved")]
    assert sorted(o.target or "" for o in outcomes) == ["machine-b", "machine-c"]
    # every send of both moves under the whole limit, in the drain's one group
    [(limit, group)] = set(cluster.machines["machine-a"].bwlimits)
    assert limit == 20e6 and group is not None and group.startswith("drain-")
