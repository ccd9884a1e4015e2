"""A plain deploy as one deploy run, against in-memory agents and a real SQLite control plane: it
creates what the manifest asks, and a failure at every phase boundary, a lost commit answer, a
cleanup failure or a ``ployzctl`` killed at any phase ends in the right rollback or cleanup, with
the durable record enough for the next run to settle what a killed one left."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ployz.control import Capacity, ControlPlane, deploy_lock_name, open_control_plane
from ployz.control.errors import ControlPlaneError, StaleFencingToken
from ployz.deploy.apply import deploy
from ployz.deploy.errors import DeployFailed, DeployFailedAfterCommit
from ployz.deploy.events import Emit, Event
from ployz.deploy.manifest import Manifest, parse_manifest
from tests.unit.conftest import RegisterMachines
from tests.unit.deploy.fake_agents import FakeCluster

MACHINES = ["machine-a", "machine-b"]


def manifest(version: str, machine: str = "machine-a") -> Manifest:
    return parse_manifest(textwrap.dedent(f"""
        namespace = "shop"
        [[volumes]]
        name = "db"
        quota = "1G"
        owner = "machine-a"
        [[services]]
        name = "web"
        placement = "{machine}"
        [services.template]
        image = "img:1"
        env = {{ VERSION = "{version}" }}
        mounts = {{ db = "/data" }}
    """), "deploy.toml")


@pytest.fixture
def cp(tmp_path: Path, register_machines: RegisterMachines) -> Iterator[ControlPlane]:
    with open_control_plane(f"sqlite:///{tmp_path / 'control.db'}") as plane:
        register_machines(plane, MACHINES, Capacity(pool_free=8 << 30))
        yield plane


@pytest.fixture
def agents() -> FakeCluster:
    cluster = FakeCluster(MACHINES)
    for machine in cluster.machines.values():
        machine.images.add("img:1")
    return cluster


class Killed(BaseException):
    """``ployzctl`` killed: nothing of the run's own handling runs any more."""


def recorded(events: list[dict[str, Any]]) -> Emit:
    """A listener keeping each event as ``--json`` prints it."""
    return lambda event: events.append(event.to_json())


def killed_at(phase: str, events: list[dict[str, Any]]) -> Emit:
    def emit(event: Event) -> None:
        events.append(event.to_json())
        if event.to_json() == {"event": "phase", "phase": phase}:
            raise Killed(phase)
    return emit


def containers(agents: FakeCluster, machine: str = "machine-a") -> list[tuple[str, str, str]]:
    return sorted((c.name, c.state, c.labels["ployz.deploy"])
                  for c in agents.machines[machine].containers.values())


def datasets(agents: FakeCluster, machine: str = "machine-a") -> list[str]:
    return sorted(d for d in agents.machines[machine].datasets if d != machine)


def only_the_old_deploy_runs(cp: ControlPlane, agents: FakeCluster, old_id: str) -> None:
    assert [(state, deploy_id) for _, state, deploy_id in containers(agents)] == [
        ("running", old_id)]
    assert datasets(agents) == ["machine-a/shop.db"]
    assert cp.namespace("shop").services["web"].config["env"] == {"VERSION": "1"}
    lease = cp.get_lease(deploy_lock_name("shop"))
    assert lease is not None and lease.released


def test_a_deploy_creates_its_volume_and_container_and_commits(
        cp: ControlPlane, agents: FakeCluster) -> None:
    events: list[dict[str, Any]] = []
    result = deploy(cp, manifest("1"), agents, holder="ops", emit=recorded(events))
    assert result.deploy_id is not None and result.commit_seq == 1
    assert datasets(agents) == ["machine-a/shop.db"]
    assert containers(agents) == [(f"ployz-shop-web-{result.deploy_id}", "running",
                                   result.deploy_id)]
    state = cp.namespace("shop")
    assert (state.volumes["db"].owner, state.routes["web"].machine) == ("machine-a", "machine-a")
    record = cp.get_deploy(result.deploy_id)
    assert (record.kind, record.status, record.phase) == ("deploy", "committed", "done")
    assert [e["phase"] for e in events if e["event"] == "phase"] == ["apply", "commit",
                                                                     "cleanup"]
    again = deploy(cp, manifest("1"), agents, holder="ops")
    assert again.deploy_id is None  # nothing to change: nothing recorded


@pytest.mark.parametrize("call", ["zfs.create", "containers.create", "containers.start",
                                  "containers.wait_ready"])
def test_a_failure_before_the_commit_undoes_everything(cp: ControlPlane, agents: FakeCluster,
                                                       call: str) -> None:
    agents.fail_on("machine-a", call)
    with pytest.raises(DeployFailed) as failed:
        deploy(cp, manifest("1"), agents, holder="ops")
    assert failed.value.left == [] and "failed in phase apply" in str(failed.value)
    assert containers(agents) == [] and datasets(agents) == []
    assert cp.namespace("shop").services == {}
    record = cp.get_deploy(failed.value.deploy_id)
    assert (record.status, record.detail["rolled_back"]) == ("failed", True)


@pytest.mark.parametrize("call", ["containers.start", "containers.wait_ready"])
def test_a_failed_replace_restarts_the_old_container(cp: ControlPlane, agents: FakeCluster,
                                                     call: str) -> None:
    old = deploy(cp, manifest("1"), agents, holder="ops").deploy_id
    assert old is not None
    agents.fail_on("machine-a", call)
    with pytest.raises(DeployFailed) as failed:
        deploy(cp, manifest("2"), agents, holder="ops")
    assert any(u.startswith("restarted container") for u in failed.value.undone)
    only_the_old_deploy_runs(cp, agents, old)


def test_a_lost_lock_at_the_commit_rolls_back(cp: ControlPlane, agents: FakeCluster,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    old = deploy(cp, manifest("1"), agents, holder="ops").deploy_id
    assert old is not None

    def commit(*args: Any, **kwargs: Any) -> Any:
        raise StaleFencingToken("deploy-lock:shop", 1, 2)

    monkeypatch.setattr(cp, "commit", commit)
    with pytest.raises(DeployFailed) as failed:
        deploy(cp, manifest("2"), agents, holder="ops")
    assert "lock-lost" in str(failed.value) and failed.value.phase == "commit"
    monkeypatch.undo()
    only_the_old_deploy_runs(cp, agents, old)


def test_a_commit_whose_answer_was_lost_is_finished_not_undone(
        cp: ControlPlane, agents: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    old = deploy(cp, manifest("1"), agents, holder="ops").deploy_id
    commit = cp.commit

    def lost(*args: Any, **kwargs: Any) -> Any:
        commit(*args, **kwargs)
        raise ControlPlaneError("connection reset before the answer")

    monkeypatch.setattr(cp, "commit", lost)
    result = deploy(cp, manifest("2"), agents, holder="ops")
    assert result.commit_seq == 2
    assert [(state, d) for _, state, d in containers(agents)] == [("running", result.deploy_id)]
    assert old != result.deploy_id


def test_a_failed_cleanup_is_failed_after_commit_and_the_next_run_finishes_it(
        cp: ControlPlane, agents: FakeCluster) -> None:
    deploy(cp, manifest("1"), agents, holder="ops")
    agents.fail_on("machine-a", "containers.remove")
    with pytest.raises(DeployFailedAfterCommit) as failed:
        deploy(cp, manifest("2"), agents, holder="ops")
    new = failed.value.deploy_id
    assert cp.get_deploy(new).status == "failed-after-commit"
    assert len(containers(agents)) == 2  # the old one is still there, stopped

    events: list[dict[str, Any]] = []
    assert deploy(cp, manifest("2"), agents, holder="ops", emit=recorded(events)).deploy_id is None
    assert [e["action"] for e in events if e["event"] == "recover"] == ["cleanup"]
    assert [(state, d) for _, state, d in containers(agents)] == [("running", new)]
    assert (cp.get_deploy(new).status, cp.get_deploy(new).phase) == ("committed", "done")


@pytest.mark.parametrize(("phase", "action"), [("apply", "roll-back"), ("commit", "roll-back"),
                                               ("cleanup", "cleanup")])
def test_killed_at_a_phase_boundary_then_run_again_completes(
        cp: ControlPlane, agents: FakeCluster, phase: str, action: str) -> None:
    old = deploy(cp, manifest("1"), agents, holder="ops").deploy_id
    killed: list[dict[str, Any]] = []
    with pytest.raises(Killed):
        deploy(cp, manifest("2"), agents, holder="ops", emit=killed_at(phase, killed))
    (started,) = [d for d in cp.list_deploys("shop") if d.id != old]
    assert started.status == ("committed" if phase == "cleanup" else "applying")

    events: list[dict[str, Any]] = []
    result = deploy(cp, manifest("2"), agents, holder="ops", emit=recorded(events))
    assert [(e["action"], e["deploy_id"]) for e in events if e["event"] == "recover"] == [
        (action, started.id)]
    if action == "roll-back":  # the killed run undone, this one did the deploy
        assert result.deploy_id not in (None, started.id)
        assert cp.get_deploy(started.id).status == "failed"
        current = result.deploy_id
    else:  # the killed run had committed: finishing its cleanup is all there was to do
        assert result.deploy_id is None
        current = started.id
    assert [(state, d) for _, state, d in containers(agents)] == [("running", current)]
    assert cp.namespace("shop").services["web"].config["env"] == {"VERSION": "2"}
    assert datasets(agents) == ["machine-a/shop.db"]
