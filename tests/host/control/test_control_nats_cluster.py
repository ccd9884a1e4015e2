"""The NATS backend on a 3-node JetStream cluster keeps working when a node dies mid-test."""

from __future__ import annotations

import asyncio
import threading

import nats

from ployz.control import (
    ControlPlane,
    Machine,
    PutService,
    Service,
    SetPlacement,
    deploy_lock_name,
    open_control_plane,
)

NS = "shop"
MACHINES = ("machine-a", "machine-b")
WAIT_S = 60.0


def stream_leader(server_urls: list[str], stream: str) -> str:
    async def ask() -> str:
        nc = await nats.connect(servers=server_urls)
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.cluster is not None
            return info.cluster.leader
        finally:
            await nc.close()

    return asyncio.run(ask())


class CommitLoop(threading.Thread):
    """Commits placement flips one after another until told to stop; keeps every sequence."""

    def __init__(self, cp: ControlPlane, token: int) -> None:
        super().__init__(daemon=True)
        self.cp = cp
        self.token = token
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self.progress = threading.Condition()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                machine = MACHINES[len(self.seqs) % 2]
                record = self.cp.commit(
                    NS, self.token, [SetPlacement(service="web", machine=machine)]
                )
                with self.progress:
                    self.seqs.append(record.seq)
                    self.progress.notify_all()
        except BaseException as exc:
            self.error = exc
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        with self.progress:
            reached = self.progress.wait_for(
                lambda: len(self.seqs) >= count or self.error is not None, timeout=WAIT_S
            )
        assert self.error is None, f"commit loop failed: {self.error!r}"
        assert reached, f"only {len(self.seqs)} commits"


def test_control_plane_survives_a_killed_node(nats_cluster) -> None:
    hosts = ",".join(server.url for server in nats_cluster)
    url = f"nats://{hosts}?replicas=3&timeout=30"
    with open_control_plane(url) as cp:
        for index, machine_id in enumerate(MACHINES, start=1):
            cp.register_machine(
                Machine(
                    id=machine_id, overlay_ip=f"10.210.{index}.1", subnet=f"10.210.{index}.0/24"
                )
            )
        lease = cp.acquire(deploy_lock_name(NS), "deploy-1", ttl=120)
        service = Service(namespace=NS, name="web", image="busybox:test", machine=MACHINES[0])
        cp.commit(NS, lease.token, [PutService(service=service)])

        writer = CommitLoop(cp, lease.token)
        writer.start()
        try:
            writer.wait_for(3)
            # Kill the node that leads the namespaces bucket: the case that needs an election.
            leader = stream_leader([f"nats://{s.url}" for s in nats_cluster], "KV_ployz-namespaces")
            killed = next(server for server in nats_cluster if server.name == leader)
            killed.kill()
            done_before = len(writer.seqs)
            writer.wait_for(done_before + 5)
        finally:
            writer.stopping.set()
            writer.join(WAIT_S)
        assert writer.error is None

        # No commit lost or applied twice across the failover.
        assert writer.seqs == list(range(2, writer.seqs[-1] + 1))
        assert [c.seq for c in cp.list_commits(NS)] == list(range(1, writer.seqs[-1] + 1))
        renewed = cp.renew(deploy_lock_name(NS), lease.token, ttl=120)
        assert renewed.token == lease.token
        cp.heartbeat(MACHINES[0])

    # A new client, whose seed list still names the dead node, works too.
    with open_control_plane(url) as fresh:
        assert fresh.namespace(NS).services["web"].machine == MACHINES[(len(writer.seqs) - 1) % 2]
        assert fresh.get_machine(MACHINES[0]).last_heartbeat is not None
        other = fresh.acquire("drain/machine-b", "drainer", ttl=60)
        assert other.token == 1
