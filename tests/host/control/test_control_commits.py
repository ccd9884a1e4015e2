"""Commit contract, on both backends: numbering, fencing, validation, atomicity, deploy status."""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from ployz.control import (
    ControlPlane,
    InvalidChange,
    InvalidDeployTransition,
    Lease,
    LeaseKeeper,
    PutService,
    PutVolume,
    RecordTransfer,
    RemoveService,
    Route,
    Service,
    SetPlacement,
    SetRoute,
    SetVolumeOwner,
    StaleFencingToken,
    TransferEvidence,
    UnknownCommit,
    UnknownDeploy,
    UnknownMachine,
    UnknownService,
    UnknownVolume,
    deploy_lock_name,
    open_control_plane,
)
from ployz.control.models import utcnow

WORKER = Path(__file__).with_name("control_worker.py")
NS = "shop"


def service(name: str, machine: str) -> Service:
    return Service(
        namespace=NS,
        name=name,
        image="busybox:test",
        machine=machine,
        config={"command": ["sleep", "inf"], "env": {"A": "1"}},
    )


def seed(cp: ControlPlane, machine: str, volumes: int = 1, services: int = 1) -> Lease:
    """Lock the namespace and commit its first deploy: volumes and services on ``machine``."""
    lease = cp.acquire(deploy_lock_name(NS), "deploy-seed", ttl=60)
    changes: list = [
        PutVolume(
            volume={
                "namespace": NS,
                "name": f"vol{i}",
                "dataset": f"tank/{NS}/vol{i}",
                "owner": machine,
                "quota": 1 << 30,
            }
        )
        for i in range(volumes)
    ]
    changes += [PutService(service=service(f"svc{i}", machine)) for i in range(services)]
    cp.commit(NS, lease.token, changes)
    return lease


def evidence(volume: str, source: str, target: str, guid: int = 7, received: int = 7):
    return TransferEvidence(
        namespace=NS,
        volume=volume,
        source=source,
        target=target,
        snapshot="ployz-move-x-" + volume,
        guid=guid,
        received_guid=received,
        bytes=1 << 20,
        checksum="xxh64:00ff",
        acknowledged_at=utcnow(),
    )


def test_commits_are_numbered_and_their_facts_visible(cp: ControlPlane, machines) -> None:
    a, b, _ = machines
    lease = seed(cp, a)
    deploy = cp.begin_deploy(NS, "migrate")
    assert (deploy.status, deploy.phase) == ("applying", "plan")
    record = cp.commit(
        NS,
        lease.token,
        [
            SetVolumeOwner(volume="vol0", owner=b),
            SetPlacement(service="svc0", machine=b),
            SetRoute(route=Route(namespace=NS, service="svc0", machine=b, endpoint="10.0.0.2:80")),
            RecordTransfer(evidence=evidence("vol0", a, b)),
        ],
        deploy_id=deploy.id,
    )
    assert (record.seq, record.fencing_token, record.deploy_id) == (2, lease.token, deploy.id)
    assert record.holder == "deploy-seed"
    state = cp.namespace(NS)
    assert state.volumes["vol0"].owner == b
    assert state.services["svc0"].machine == b
    assert state.routes["svc0"].endpoint == "10.0.0.2:80"
    assert state.transfers["vol0"].target == b
    assert cp.get_volume(NS, "vol0").owner == b
    assert cp.get_service(NS, "svc0").config["env"] == {"A": "1"}
    assert [c.seq for c in cp.list_commits(NS)] == [1, 2]
    assert cp.get_commit(NS, 2) == record
    assert cp.get_commit(NS, 1).changes[0].volume.owner == a
    committed = cp.get_deploy(deploy.id)
    assert (committed.status, committed.commit_seq) == ("committed", 2)


def test_commit_with_a_superseded_token_changes_nothing(cp: ControlPlane, machines) -> None:
    a, b, _ = machines
    old = seed(cp, a)
    cp.release(deploy_lock_name(NS), old.token)
    new = cp.acquire(deploy_lock_name(NS), "deploy-2", ttl=60)
    before = cp.namespace(NS)
    with pytest.raises(StaleFencingToken, match="held by 'deploy-2'") as stale:
        cp.commit(NS, old.token, [SetVolumeOwner(volume="vol0", owner=b)])
    assert stale.value.token == old.token
    assert cp.namespace(NS) == before
    assert [c.seq for c in cp.list_commits(NS)] == [1]
    assert cp.commit(NS, new.token, [SetVolumeOwner(volume="vol0", owner=b)]).seq == 2


def test_commit_after_the_lease_expired_is_refused(cp: ControlPlane, machines) -> None:
    lease = cp.acquire(deploy_lock_name(NS), "deploy-1", ttl=0.3)
    time.sleep(0.4)
    with pytest.raises(StaleFencingToken, match="expired"):
        cp.commit(NS, lease.token, [PutService(service=service("svc0", machines[0]))])
    assert cp.namespace(NS).services == {}


def test_commit_without_the_lock_is_refused(cp: ControlPlane, machines) -> None:
    with pytest.raises(StaleFencingToken, match="never acquired"):
        cp.commit(NS, 1, [PutService(service=service("svc0", machines[0]))])
    assert cp.list_commits(NS) == []


@pytest.mark.parametrize(
    ("bad_change", "error"),
    [
        (SetVolumeOwner(volume="nope", owner="machine-b"), UnknownVolume),
        (SetPlacement(service="nope", machine="machine-b"), UnknownService),
        (SetVolumeOwner(volume="vol0", owner="machine-z"), UnknownMachine),
        (RemoveService(name="nope"), UnknownService),
        (
            PutService(
                service=Service(namespace="other", name="x", image="i", machine="machine-a")
            ),
            InvalidChange,
        ),
        (
            RecordTransfer(evidence=evidence("vol0", "machine-a", "machine-b", guid=1, received=2)),
            InvalidChange,
        ),
        # evidence of a move to machine-c while the commit leaves the volume on machine-b
        (RecordTransfer(evidence=evidence("vol0", "machine-a", "machine-c")), InvalidChange),
    ],
)
def test_an_invalid_change_rejects_the_whole_commit(
    cp: ControlPlane, machines, bad_change, error: type[Exception]
) -> None:
    lease = seed(cp, machines[0])
    before = cp.namespace(NS)
    good = [
        SetVolumeOwner(volume="vol0", owner="machine-b"),
        SetPlacement(service="svc0", machine="machine-b"),
    ]
    with pytest.raises(error):
        cp.commit(NS, lease.token, [*good, bad_change])
    assert cp.namespace(NS) == before
    assert [c.seq for c in cp.list_commits(NS)] == [1]


def test_empty_and_malformed_change_sets_are_refused(cp: ControlPlane, machines) -> None:
    lease = seed(cp, machines[0])
    with pytest.raises(InvalidChange, match="at least one change"):
        cp.commit(NS, lease.token, [])
    with pytest.raises(ValidationError, match="owner"):
        cp.commit(NS, lease.token, [{"op": "set_volume_owner", "volume": "vol0"}])
    with pytest.raises(ValidationError):
        cp.commit(NS, lease.token, [{"op": "format_disk"}])
    assert [c.seq for c in cp.list_commits(NS)] == [1]


def test_removing_a_service_removes_its_route(cp: ControlPlane, machines) -> None:
    lease = seed(cp, machines[0], services=2)
    cp.commit(
        NS, lease.token, [SetRoute(route=Route(namespace=NS, service="svc1", machine=machines[0]))]
    )
    cp.commit(NS, lease.token, [RemoveService(name="svc1")])
    state = cp.namespace(NS)
    assert sorted(state.services) == ["svc0"]
    assert state.routes == {}
    with pytest.raises(UnknownService):
        cp.get_service(NS, "svc1")


def test_facts_are_listed_per_namespace_and_across(cp: ControlPlane, machines) -> None:
    seed(cp, machines[0], volumes=2, services=2)
    assert [s.name for s in cp.list_services(NS)] == ["svc0", "svc1"]
    assert [v.name for v in cp.list_volumes()] == ["vol0", "vol1"]
    assert cp.list_services("blog") == []
    with pytest.raises(UnknownCommit):
        cp.get_commit(NS, 5)


def test_deploy_status_moves(cp: ControlPlane, machines) -> None:
    lease = seed(cp, machines[0])
    failing = cp.begin_deploy(NS, "migrate")
    failing = cp.update_deploy(failing.id, phase="apply")
    failed = cp.update_deploy(failing.id, status="failed", reason="lock-lost")
    assert (failed.status, failed.phase, failed.reason) == ("failed", "apply", "lock-lost")
    with pytest.raises(InvalidDeployTransition, match="failed deploy is final"):
        cp.update_deploy(failed.id, status="applying")
    with pytest.raises(InvalidDeployTransition):
        cp.commit(
            NS,
            lease.token,
            [SetPlacement(service="svc0", machine=machines[1])],
            deploy_id=failed.id,
        )

    working = cp.begin_deploy(NS, "migrate", deploy_id="move-svc0", detail={"to": machines[1]})
    with pytest.raises(ValidationError, match="phase"):
        cp.update_deploy(working.id, phase="teleport")  # type: ignore[arg-type]
    working = cp.update_deploy(working.id, phase="apply", detail={"to": machines[1], "round": 2})
    assert cp.get_deploy(working.id).detail == {"to": machines[1], "round": 2}
    with pytest.raises(InvalidDeployTransition, match="only a commit"):
        cp.update_deploy(working.id, status="committed")
    cp.commit(
        NS, lease.token, [SetPlacement(service="svc0", machine=machines[1])], deploy_id=working.id
    )
    with pytest.raises(InvalidDeployTransition, match="failed-after-commit"):
        cp.update_deploy(working.id, status="failed")
    cleanup_failed = cp.update_deploy(
        working.id, phase="cleanup", status="failed-after-commit", reason="source agent unreachable"
    )
    assert cleanup_failed.commit_seq == 2
    done = cp.update_deploy(working.id, phase="done", status="committed")
    assert done.status == "committed"
    assert [d.id for d in cp.list_deploys(NS)] == [failed.id, "move-svc0"]
    with pytest.raises(UnknownDeploy):
        cp.get_deploy("nope")
    with pytest.raises(InvalidDeployTransition, match="exists"):
        cp.begin_deploy(NS, "migrate", deploy_id="move-svc0")


def _wait_for_lines(process: subprocess.Popen[str], count: int) -> list[str]:
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(count)]
    assert all(lines), f"writer stopped early (exit status {process.poll()})"
    return lines


def test_a_writer_killed_mid_commit_leaves_all_or_nothing(
    cp: ControlPlane, control_url: str, machines
) -> None:
    lease = seed(cp, machines[0], volumes=4, services=3)
    rng = random.Random(4)
    acknowledged = 0
    for _ in range(3):
        writer = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "commit-loop",
                control_url,
                NS,
                str(lease.token),
                ",".join(machines),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        acknowledged = int(_wait_for_lines(writer, 3)[-1])
        time.sleep(rng.uniform(0, 0.05))  # land the kill at a varying point of a commit
        writer.send_signal(signal.SIGKILL)
        writer.wait()

        with open_control_plane(control_url) as fresh:
            state = fresh.namespace(NS)
            seq = state.commit_seq
            assert seq >= acknowledged
            # Every fact comes from the same, latest commit: its round number and its target.
            target = machines[seq % len(machines)]
            assert {v.owner for v in state.volumes.values()} == {target}
            assert {s.machine for s in state.services.values()} == {target}
            assert {r.machine for r in state.routes.values()} == {target}
            assert {(e.target, e.guid) for e in state.transfers.values()} == {(target, seq)}
            # No commit lost or duplicated, and the latest one's deploy is committed.
            commits = fresh.list_commits(NS)
            assert [c.seq for c in commits] == list(range(1, seq + 1))
            latest = fresh.get_deploy(commits[-1].deploy_id)
            assert (latest.status, latest.commit_seq) == ("committed", seq)
            for deploy in fresh.list_deploys(NS):
                assert (deploy.status == "committed") == (deploy.commit_seq is not None)


TTL_S = 6.0
COMMIT_PAUSE_S = 0.005


def test_concurrent_commits_under_one_lock_lose_nothing(control_url: str, machines) -> None:
    """Threads of one deploy process committing at once while a lease keeper renews the lock:
    every commit lands exactly once, numbered without gaps, and the lease is never lost.

    The committers pause a few milliseconds between commits, as a deploy's steps do: four
    threads committing back to back, each winning the namespace document's compare-and-swap
    in turn, starved the keeper's renewal of the same document past a 3 s lease once in a
    while (SQLite's busy handler is not fair), which no deploy's pace comes near."""
    with open_control_plane(control_url) as cp:
        lease = cp.acquire(deploy_lock_name(NS), "deploy-1", ttl=TTL_S)
        stop = threading.Event()
        committed: list[str] = []
        errors: list[BaseException] = []

        def commit_services(worker: int) -> None:
            with open_control_plane(control_url) as own:
                try:
                    for i in itertools.count():
                        if stop.is_set():
                            return
                        name = f"svc-{worker}-{i}"
                        own.commit(
                            NS, lease.token, [PutService(service=service(name, machines[0]))]
                        )
                        committed.append(name)
                        time.sleep(COMMIT_PAUSE_S)
                except BaseException as exc:
                    errors.append(exc)

        with LeaseKeeper(cp, lease, ttl=TTL_S) as keeper:
            workers = [threading.Thread(target=commit_services, args=(w,)) for w in range(4)]
            for worker in workers:
                worker.start()
            renewals: set[object] = set()
            while len(renewals) < 3 and not errors and not keeper.lost.is_set():
                renewals.add(keeper.lease.expires_at)  # commits keep going across renewals
                time.sleep(0.05)
            stop.set()
            for worker in workers:
                worker.join()
            assert errors == []
            keeper.check()
        state = cp.namespace(NS)
        assert sorted(state.services) == sorted(committed)
        assert [c.seq for c in cp.list_commits(NS)] == list(range(1, len(committed) + 1))
