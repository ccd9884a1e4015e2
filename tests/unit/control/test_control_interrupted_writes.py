"""Writes interrupted at the worst moments, on the real SQLite store with injected faults.

The fault points are exact here (the host suite kills a writer process at random moments): a
writer that dies right after its commit became durable, and a write whose acknowledgement is lost
so the writer retries it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ployz.control import (
    ControlPlane,
    Deploy,
    Machine,
    PutService,
    Service,
    SetPlacement,
    deploy_lock_name,
)
from ployz.control.sqlite_store import SqliteStore
from ployz.control.store import RevisionConflict


class WriterKilled(BaseException):
    """Stands for SIGKILL: nothing after the fault point runs."""


class FaultyStore(SqliteStore):
    """The real SQLite store, with one fault armed on a chosen kind of write."""

    kill_before_create_of: str | None = None
    lose_ack_of_update_of: str | None = None

    def create(self, kind: str, key: str, value: bytes) -> int:
        if kind == self.kill_before_create_of:
            self.kill_before_create_of = None
            raise WriterKilled
        return super().create(kind, key, value)

    def update(self, kind: str, key: str, value: bytes, revision: int) -> int:
        new_revision = super().update(kind, key, value, revision)
        if kind == self.lose_ack_of_update_of:
            self.lose_ack_of_update_of = None
            raise RevisionConflict("the write landed, its acknowledgement did not")
        return new_revision


@pytest.fixture
def store(tmp_path: Path) -> FaultyStore:
    return FaultyStore(tmp_path / "control.db")


def seeded(store: FaultyStore) -> tuple[ControlPlane, int]:
    cp = ControlPlane(store)
    for machine_id in ("machine-a", "machine-b"):
        cp.register_machine(Machine(id=machine_id, overlay_ip="10.0.0.1", subnet="10.0.0.0/24"))
    token = cp.acquire(deploy_lock_name("shop"), "deploy-1", ttl=60).token
    service = Service(namespace="shop", name="web", image="busybox", machine="machine-a")
    cp.commit("shop", token, [PutService(service=service)])
    return cp, token


def killed_after_commit(store: FaultyStore) -> Deploy:
    """A migrate deploy whose commit moving shop/web to machine-b became durable, its writer
    killed before archiving it."""
    cp, token = seeded(store)
    deploy = cp.begin_deploy("shop", "migrate")
    store.kill_before_create_of = "commits"
    with pytest.raises(WriterKilled):
        cp.commit(
            "shop", token, [SetPlacement(service="web", machine="machine-b")], deploy_id=deploy.id
        )
    return deploy


def test_commit_durable_but_not_archived_is_rolled_forward(store: FaultyStore) -> None:
    deploy = killed_after_commit(store)
    reader = ControlPlane(store)
    assert reader.get_service("shop", "web").machine == "machine-b"
    assert [c.seq for c in reader.list_commits("shop")] == [1, 2]
    after = reader.get_deploy(deploy.id)
    assert (after.status, after.commit_seq) == ("committed", 2)


def test_a_detail_written_while_the_commit_is_unarchived_keeps_its_roll_forward(
        store: FaultyStore) -> None:
    """A run's save of its record (no status) does not settle the pending commit first; the
    commit still rolls forward and the detail stays."""
    deploy = killed_after_commit(store)
    reader = ControlPlane(store)
    reader.update_deploy(deploy.id, phase="cleanup", detail={"step": "cleanup"})
    after = reader.get_deploy(deploy.id)
    assert (after.status, after.commit_seq, after.phase) == ("committed", 2, "cleanup")
    assert after.detail == {"step": "cleanup"}


def test_next_commit_archives_the_unarchived_one_first(store: FaultyStore) -> None:
    cp, token = seeded(store)
    store.kill_before_create_of = "commits"
    with pytest.raises(WriterKilled):
        cp.commit("shop", token, [SetPlacement(service="web", machine="machine-b")])
    cp.commit("shop", token, [SetPlacement(service="web", machine="machine-a")])
    commits = cp.list_commits("shop")
    assert [(c.seq, c.changes[0].machine) for c in commits[1:]] == [
        (2, "machine-b"),
        (3, "machine-a"),
    ]


def test_lost_acknowledgement_does_not_apply_a_commit_twice(store: FaultyStore) -> None:
    cp, token = seeded(store)
    store.lose_ack_of_update_of = "namespaces"
    record = cp.commit("shop", token, [SetPlacement(service="web", machine="machine-b")])
    assert record.seq == 2
    assert [c.seq for c in cp.list_commits("shop")] == [1, 2]
