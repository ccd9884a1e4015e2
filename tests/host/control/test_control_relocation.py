"""The control plane moves from a single JetStream server to three replicated ones: every fact
arrives, the old store refuses writes from then on, and the old URL leads to the new servers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from ployz.agent.control_link import ControlLocation, ControlPlaneFacts, control_plane_heartbeat
from ployz.control import (
    ControlPlaneMoved,
    Machine,
    PutService,
    Service,
    deploy_lock_name,
    open_control_plane,
)
from ployz.control.nats_store import NatsStore
from ployz.control.relocation import relocate
from ployz.control.store import KINDS
from ployz.control.url import open_store
from tests.host.control.conftest import NatsServer


@dataclass(frozen=True)
class Move:
    """A single server holding machine-a's fact, and three servers to move it onto."""

    old_url: str
    new_url: str

    def stores(self) -> tuple[NatsStore, NatsStore]:
        source, target = open_store(self.old_url), open_store(self.new_url)
        assert isinstance(source, NatsStore) and isinstance(target, NatsStore)
        return source, target

    def run(self) -> None:
        source, target = self.stores()
        try:
            relocate(source, target, self.new_url)
        finally:
            source.close()
            target.close()


@pytest.fixture
def move(private_nats_server: NatsServer, nats_cluster: list[NatsServer]) -> Move:
    old_url = f"nats://{private_nats_server.url}"
    with open_control_plane(old_url) as cp:
        cp.register_machine(Machine(id="machine-a", overlay_ip="10.210.1.1",
                                    subnet="10.210.1.0/24"))
    return Move(old_url, "nats://" + ",".join(s.url for s in nats_cluster) + "?replicas=3")


def documents(store: NatsStore) -> dict[str, dict[str, bytes]]:
    return {kind: {key: doc.value for key, doc in store.list(kind)} for kind in KINDS}


def replicas_of(servers: list[NatsServer], stream: str) -> tuple[int, int]:
    """The stream's configured replicas and how many peers follow its leader."""
    async def ask() -> tuple[int, int]:
        nc = await nats.connect(servers=[f"nats://{s.url}" for s in servers])
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.cluster is not None
            return info.config.num_replicas or 1, len(info.cluster.replicas or [])
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_a_move_copies_every_fact_seals_the_old_store_and_the_old_url_leads_on(
        move: Move, nats_cluster: list[NatsServer]) -> None:
    old_url, new_url = move.old_url, move.new_url
    with open_control_plane(old_url) as cp:
        lock = cp.acquire(deploy_lock_name("shop"), holder="deploy-1", ttl=60)
        cp.commit("shop", lock.token, [PutService(service=Service(
            namespace="shop", name="web", image="busybox", machine="machine-a"))])
        cp.release(lock.name, lock.token)
    source, target = move.stores()
    try:
        before = documents(source)
        assert relocate(source, target, new_url) == sum(len(d) for d in before.values())
        assert documents(target) == before
        assert target.replicas() == 3
        assert replicas_of(nats_cluster, "KV_ployz-namespaces") == (3, 2)

        # Run again (a move that stopped halfway): nothing changes, nothing fails.
        revisions = {kind: dict(target.list(kind)) for kind in KINDS}
        relocate(source, target, new_url)
        assert {kind: dict(target.list(kind)) for kind in KINDS} == revisions
        assert source.moved_to() == new_url
    finally:
        source.close()
        target.close()

    with open_control_plane(old_url) as followed:
        assert followed.location == new_url
        assert followed.get_service("shop", "web").machine == "machine-a"
        followed.heartbeat("machine-a", None)  # the new store takes writes
    stale = open_store(old_url)
    try:
        with pytest.raises(ControlPlaneMoved, match="moved to the cluster's replicated"):
            stale.update("machines", "machine-a", b"{}", 1)
        with pytest.raises(ControlPlaneMoved):
            stale.create("invites", "x", b"{}")
        assert documents(stale) == before  # nothing was lost or changed by the refusals
    finally:
        stale.close()


def test_a_server_of_the_three_dies_and_the_moved_control_plane_keeps_its_facts(
        move: Move, nats_cluster: list[NatsServer]) -> None:
    move.run()
    nats_cluster[0].kill()
    with open_control_plane(move.old_url) as cp:
        cp.heartbeat("machine-a", None)
        assert [m.id for m in cp.list_machines()] == ["machine-a"]


def test_the_agents_control_link_follows_the_move_and_rewrites_its_control_file(
        move: Move, tmp_path: Path) -> None:
    old_url, new_url = move.old_url, move.new_url
    control_file = tmp_path / "control.url"
    control_file.write_text(old_url + "\n")
    location = ControlLocation(old_url, control_file)
    heartbeat = control_plane_heartbeat(location)
    facts = {"pool_free": 10, "pool_used": 5, "containers": 0}
    heartbeat("machine-a", facts)
    machines = ControlPlaneFacts(location, "machine-a")
    try:
        assert [m.machine_id for m in machines.read().machines] == ["machine-a"]
        move.run()
        # The next read follows the move, the control file then names the new servers, and
        # the watch made there sees changes there.
        assert [m.machine_id for m in machines.read().machines] == ["machine-a"]
        assert control_file.read_text() == new_url + "\n"
        with open_control_plane(new_url) as cp:
            cp.register_machine(Machine(id="machine-b", overlay_ip="10.210.1.2",
                                        subnet="10.210.2.0/24"))
        assert machines.wait(10) is True
        assert [m.machine_id for m in machines.read().machines] == ["machine-a", "machine-b"]
    finally:
        machines.close()
    # The heartbeat's own connection is still to the sealed store: refused there, the beat is
    # sent again where the control plane moved.
    heartbeat("machine-a", facts | {"pool_free": 20})
    with open_control_plane(new_url) as cp:
        capacity = cp.get_machine("machine-a").capacity
        assert capacity is not None and capacity.pool_size == 25
    reopened = ControlPlaneFacts(location, "machine-a")  # where the control file now points
    try:
        assert [m.machine_id for m in reopened.read().machines] == ["machine-a", "machine-b"]
    finally:
        reopened.close()
