"""In-memory agents implementing :class:`ployz.agent.api.Agent`, for unit tests of the
orchestrator's phases: a machine with a pool of datasets and snapshots, containers and images,
and transfers that copy a snapshot into another fake machine's pool.

They keep the rules the real agent keeps where the orchestrator depends on them (a snapshot's
guid travels with it; a held snapshot cannot be destroyed; a dataset with snapshots cannot be
destroyed; unknown names raise the library's typed errors), and nothing more: the real agent is
tested against real ZFS and Docker in the host and VM suites.

``FakeCluster.fail_on("machine-b", "containers.start")`` makes the next such call raise, which is
how a test puts a failure at a phase boundary; ``calls`` lists every call, in order.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.api import (
    Agent,
    Committed,
    ContainerApi,
    PoolCapacity,
    Props,
    ReceiveEndpoint,
    ReceiveState,
    ReceiveSummary,
    SendStatus,
    SendSummary,
    SetProps,
    TransferApi,
    ZfsApi,
)
from ployz.agent.errors import AgentUnreachable, UnknownTransfer
from ployz.control.models import Machine
from ployz.runtime.errors import ContainerNotFound, ImageMissing
from ployz.runtime.model import STOP_TIMEOUT_S, ContainerInfo, ServiceSpec
from ployz.zfs.errors import DatasetBusy, DatasetExists, DatasetNotFound, SnapshotHeld
from ployz.zfs.names import dataset_of
from ployz.zfs.resume import ResumeToken
from ployz.zfs.snapshots import Snapshot

_guids = itertools.count(1000)


@dataclass
class FakeDataset:
    props: dict[str, int | str | None]
    snapshots: list[Snapshot] = field(default_factory=list)
    holds: dict[str, set[str]] = field(default_factory=dict)
    written: int = 0
    """Bytes written since the latest snapshot; the tests set it to make pre-copy go on."""
    writes_between_snapshots: int = 0
    """What ``written`` is again after each snapshot: a service that keeps writing."""


class FakeMachine:
    """The state of one machine, shared by its agent's forks."""

    def __init__(self, cluster: FakeCluster, machine_id: str, pool: str, free: int) -> None:
        self.cluster = cluster
        self.id = machine_id
        self.pool = pool
        self.free = free
        self.datasets: dict[str, FakeDataset] = {
            pool: FakeDataset({"mountpoint": f"/{pool}", "guid": next(_guids)})}
        self.containers: dict[str, ContainerInfo] = {}
        self.images: set[str] = set()
        self.receives: dict[str, ReceiveState] = {}
        self.receiving: dict[str, tuple[str, SetProps | None]] = {}
        self.secrets: dict[str, str | None] = {}
        """The secret each ``receive`` and ``send`` was given, by ``"<call> <transfer id>"``."""
        self.bwlimits: list[float] = []
        """The bandwidth limit each ``send`` was given, in order."""

    def check(self, call: str) -> None:
        self.cluster.calls.append(f"{self.id} {call}")
        failure = self.cluster.failures.pop((self.id, call), None)
        if failure is not None:
            raise failure


class FakeZfs(ZfsApi):
    def __init__(self, machine: FakeMachine) -> None:
        self.m = machine

    def _dataset(self, name: str) -> FakeDataset:
        dataset = self.m.datasets.get(dataset_of(name))
        if dataset is None:
            raise DatasetNotFound(2, name, "dataset does not exist")
        return dataset

    def _snapshot(self, name: str) -> Snapshot:
        for snapshot in self._dataset(name).snapshots:
            if snapshot.name == name:
                return snapshot
        raise DatasetNotFound(2, name, "snapshot does not exist")

    def capacity(self) -> PoolCapacity:
        self.m.check("zfs.capacity")
        return PoolCapacity(pool=self.m.pool, free=self.m.free, used=0)

    def create(self, dataset: str, quota: int | None = None, mountpoint: str | None = None,
               props: SetProps | None = None) -> Props:
        self.m.check("zfs.create")
        if dataset in self.m.datasets:
            raise DatasetExists(17, dataset, "dataset already exists")
        self.m.datasets[dataset] = FakeDataset({"mountpoint": mountpoint, "quota": quota or 0,
                                                "guid": next(_guids), "referenced": 0})
        return self.m.datasets[dataset].props

    def mount(self, dataset: str, mountpoint: str) -> None:
        self.m.check("zfs.mount")
        self._dataset(dataset).props["mountpoint"] = mountpoint

    def unmount(self, dataset: str) -> None:
        self.m.check("zfs.unmount")
        self._dataset(dataset)

    def exists(self, name: str) -> bool:
        self.m.check("zfs.exists")
        try:
            self._snapshot(name) if "@" in name else self._dataset(name)
        except DatasetNotFound:
            return False
        return True

    def get(self, name: str, props: list[str]) -> Props:
        self.m.check("zfs.get")
        if "@" in name:
            return {p: self._snapshot(name).guid if p == "guid" else 0 for p in props}
        dataset = self._dataset(name)
        values = {**dataset.props, "written": dataset.written}
        return {p: values.get(p, 0) for p in props}

    def written(self, datasets: list[str]) -> int:
        self.m.check("zfs.written")
        return sum(self._dataset(d).written for d in datasets)

    def bytes_written(self, datasets: list[str]) -> int | None:
        self.m.check("zfs.bytes_written")
        return sum(self._dataset(d).written for d in datasets)

    def snapshot(self, snapshots: list[str]) -> None:
        self.m.check("zfs.snapshot")
        for name in snapshots:
            dataset = self._dataset(name)
            dataset.snapshots.append(Snapshot(len(dataset.snapshots) + 1, name, next(_guids)))
            dataset.written = dataset.writes_between_snapshots

    def snapshots(self, dataset: str) -> list[Snapshot]:
        self.m.check("zfs.snapshots")
        return list(self._dataset(dataset).snapshots)

    def hold(self, holds: dict[str, str]) -> None:
        self.m.check("zfs.hold")
        for name, tag in holds.items():
            self._snapshot(name)
            self._dataset(name).holds.setdefault(name, set()).add(tag)

    def release(self, holds: dict[str, list[str]]) -> None:
        self.m.check("zfs.release")
        for name, tags in holds.items():
            self._dataset(name).holds.get(name, set()).difference_update(tags)

    def holds(self, snapshot: str) -> dict[str, int]:
        self.m.check("zfs.holds")
        self._snapshot(snapshot)
        return dict.fromkeys(self._dataset(snapshot).holds.get(snapshot, set()), 0)

    def destroy_snapshots(self, snapshots: list[str], defer: bool = False) -> None:
        self.m.check("zfs.destroy_snapshots")
        for name in snapshots:
            dataset = self._dataset(name)
            if dataset.holds.get(name):
                raise SnapshotHeld(16, name, "snapshot is held")
            dataset.snapshots.remove(self._snapshot(name))

    def destroy(self, dataset: str) -> None:
        self.m.check("zfs.destroy")
        if self._dataset(dataset).snapshots:
            raise DatasetBusy(16, dataset, "dataset has snapshots")
        del self.m.datasets[dataset]

    def rollback(self, dataset: str, snapshot: str | None = None) -> str:
        self.m.check("zfs.rollback")
        return self._dataset(dataset).snapshots[-1].name

    def resume_token(self, dataset: str) -> ResumeToken | None:
        self.m.check("zfs.resume_token")
        self._dataset(dataset)
        return None

    def abort_receive(self, dataset: str) -> None:
        self.m.check("zfs.abort_receive")

    def send_space(self, snapshot: str, base: str | None = None) -> int:
        self.m.check("zfs.send_space")
        self._snapshot(snapshot)
        return 4096


class FakeContainers(ContainerApi):
    def __init__(self, machine: FakeMachine) -> None:
        self.m = machine

    def _get(self, name: str) -> ContainerInfo:
        container = self.m.containers.get(name)
        if container is None:
            raise ContainerNotFound(name)
        return container

    def _set(self, name: str, state: str) -> ContainerInfo:
        self.m.containers[name] = self._get(name).model_copy(update={"state": state})
        return self.m.containers[name]

    def has_image(self, image: str) -> bool:
        self.m.check("containers.has_image")
        return image in self.m.images

    def create(self, spec: ServiceSpec) -> ContainerInfo:
        self.m.check("containers.create")
        if spec.image not in self.m.images:
            raise ImageMissing(spec.image)
        info = ContainerInfo(id=spec.container_name, name=spec.container_name, image=spec.image,
                             state="created", health=None, exit_code=None,
                             labels=spec.all_labels(), mounts=list(spec.mounts),
                             started_at=None)
        self.m.containers[info.name] = info
        return info

    def start(self, name: str) -> ContainerInfo:
        self.m.check("containers.start")
        return self._set(name, "running")

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> ContainerInfo:
        self.m.check("containers.stop")
        return self._set(name, "exited")

    def remove(self, name: str, force: bool = False) -> None:
        self.m.check("containers.remove")
        self._get(name)
        del self.m.containers[name]

    def inspect(self, name: str) -> ContainerInfo:
        self.m.check("containers.inspect")
        return self._get(name)

    def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        self.m.check("containers.list")
        return [c for c in self.m.containers.values()
                if all(k in c.labels and (v is None or c.labels[k] == v)
                       for k, v in labels.items())]

    def wait_ready(self, name: str, timeout_s: float = 60.0) -> ContainerInfo:
        self.m.check("containers.wait_ready")
        return self._get(name)


class FakeTransfer(TransferApi):
    """A receive waits for a send naming its address; the send copies the snapshot (and the
    dataset, for a full send) into the receiving machine's pool with the same guid."""

    def __init__(self, machine: FakeMachine) -> None:
        self.m = machine

    def receive(self, transfer_id: str, dataset: str, props: SetProps | None = None,
                secret: str | None = None) -> ReceiveEndpoint:
        self.m.check("transfer.receive")
        self.m.secrets[f"receive {transfer_id}"] = secret
        self.m.receiving[transfer_id] = (dataset, props)
        self.m.receives[transfer_id] = ReceiveState(state="running")
        return ReceiveEndpoint(address=f"{self.m.id}/{transfer_id}")

    def receive_wait(self, transfer_id: str, timeout_s: float = 30.0) -> ReceiveState:
        self.m.check("transfer.receive_wait")
        if transfer_id not in self.m.receives:
            raise UnknownTransfer(transfer_id)
        return self.m.receives[transfer_id]

    def receive_cancel(self, transfer_id: str) -> ReceiveState:
        self.m.check("transfer.receive_cancel")
        state = self.receive_wait(transfer_id)
        if state.state == "running":
            state = self.m.receives[transfer_id] = ReceiveState(state="failed", error="cancelled")
        return state

    def send(self, transfer_id: str, snapshot: str, to: str, ticket: str,
             base: str | None = None, codec: str = "auto", bwlimit: float = 0.0,
             secret: str | None = None, encrypt: bool = False,
             limit_group: str | None = None) -> SendSummary:
        self.m.check("transfer.send")
        self.m.secrets[f"send {transfer_id}"] = secret
        self.m.bwlimits.append((bwlimit, limit_group))
        if self.m.cluster.send_barrier is not None:
            self.m.cluster.send_barrier.wait(timeout=10)
        if self.m.cluster.during_send is not None:
            self.m.cluster.during_send()
        target = self.m.cluster.machines[to.split("/", 1)[0]]
        dataset, props = target.receiving[transfer_id]
        sent = FakeZfs(self.m)._snapshot(snapshot)
        received = target.datasets.get(dataset)
        if received is None:
            if base is not None:
                raise DatasetNotFound(2, dataset, "incremental into a missing dataset")
            received = target.datasets[dataset] = FakeDataset(
                {"mountpoint": None, "guid": next(_guids), **(props or {})})
        name = f"{dataset}@{snapshot.split('@', 1)[1]}"
        received.snapshots.append(Snapshot(len(received.snapshots) + 1, name, sent.guid))
        committed = Committed(kind="zfs", size=4096, checksum="00ff", snapshot=name,
                              guid=sent.guid)
        target.receives[transfer_id] = ReceiveState(state="committed", result=ReceiveSummary(
            bytes=4096, wire_bytes=2048, seconds=0.5, resumes=0, codec="zstd",
            committed=committed, transfer_id=transfer_id))
        return SendSummary(bytes=4096, wire_bytes=2048, seconds=0.5, resumes=0, codec="zstd",
                           committed=committed, transfer_id=transfer_id)

    def send_status(self, transfer_id: str) -> SendStatus:
        self.m.check("transfer.send_status")
        return SendStatus(bytes=4096, total=4096, wire_bytes=2048, rate=8192.0, eta_s=0.0,
                          finished=True)

    def probe_receive(self, transfer_id: str, secret: str) -> ReceiveEndpoint:
        self.m.check("transfer.probe_receive")
        self.m.receives[transfer_id] = ReceiveState(state="running")
        return ReceiveEndpoint(address=f"{self.m.id}/{transfer_id}")

    def probe_send(self, transfer_id: str, to: str, ticket: str, secret: str,
                   seconds: float) -> SendSummary:
        """Moves ``probe_bytes_per_s`` of the cluster for ``seconds`` (without waiting)."""
        self.m.check("transfer.probe_send")
        size = int(self.m.cluster.probe_bytes_per_s * seconds)
        committed = Committed(kind="probe", size=size, checksum="00ff")
        summary = dict(bytes=size, wire_bytes=size, seconds=seconds, resumes=0, codec="none",
                       committed=committed, transfer_id=transfer_id)
        target = self.m.cluster.machines[to.split("/", 1)[0]]
        target.receives[transfer_id] = ReceiveState(state="committed",
                                                    result=ReceiveSummary(**summary))
        return SendSummary(**summary)


class FakeAgent(Agent):
    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine
        self._zfs = FakeZfs(machine)
        self._containers = FakeContainers(machine)
        self._transfer = FakeTransfer(machine)

    @property
    def address(self) -> str:
        return f"{self.machine.id}:7070"

    @property
    def zfs(self) -> FakeZfs:
        return self._zfs

    @property
    def containers(self) -> FakeContainers:
        return self._containers

    @property
    def transfer(self) -> FakeTransfer:
        return self._transfer

    def fork(self) -> FakeAgent:
        return FakeAgent(self.machine)

    def close(self) -> None:
        pass


class FakeCluster:
    """The fake agents of a cluster, looked up as :class:`~ployz.deploy.agents.AgentLookup`
    looks up real ones."""

    def __init__(self, machine_ids: list[str], free: int = 10 << 30) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.route_wait_s = 0.0
        """No agent acknowledges routing here: a commit names the machines, without waiting."""
        self.write_sample_s = 0.0
        """Writes are what a test sets (``FakeDataset.written``), not sampled over time."""
        self.probe_bytes_per_s = 50e6
        """What a probe of the link measures (only taken when ``write_sample_s`` is set)."""
        self.send_barrier: threading.Barrier | None = None
        """When set, every ``transfer.send`` waits at it: sends that must overlap do."""
        self.during_send: Callable[[], None] | None = None
        """When set, every ``transfer.send`` calls it: what else happens meanwhile."""
        self.calls: list[str] = []
        self.failures: dict[tuple[str, str], BaseException] = {}
        self.machines = {m: FakeMachine(self, m, m, free) for m in machine_ids}

    def agent(self, machine: Machine) -> FakeAgent:
        return self.agent_of(machine.id)

    def fork(self) -> FakeCluster:
        return self  # in-memory: every thread sees the same machines

    def close(self) -> None:
        pass

    def agent_of(self, machine_id: str) -> FakeAgent:
        return FakeAgent(self.machines[machine_id])

    def fail_on(self, machine_id: str, call: str,
                error: BaseException | None = None) -> None:
        """The next ``call`` (``zfs.snapshot``, ``containers.start``, ...) on ``machine_id``
        raises ``error``: by default the agent unreachable, as if it died."""
        self.failures[(machine_id, call)] = error or AgentUnreachable(
            f"{machine_id}:7070", "connection refused")
