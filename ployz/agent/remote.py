"""The typed client of an agent: :class:`~ployz.agent.api.Agent` over the RPC.

Each method names its RPC method once, here, sends its arguments as the agent's parameters and
reads the answer back into the model the agent's own method returned, so the orchestrator sees
the same snapshots, containers, resume tokens and transfer summaries as code on the machine, and
the same exceptions (:func:`~ployz.agent.errors.remote_error`). Calls that wait on the machine
(a container stop, a readiness wait, a send) give their RPC the time the operation may take.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter

from ployz.agent.api import (
    Agent,
    ContainerApi,
    PoolCapacity,
    Props,
    ReceiveEndpoint,
    ReceiveState,
    SendStatus,
    SendSummary,
    SetProps,
    TransferApi,
    ZfsApi,
)
from ployz.agent.client import AgentClient
from ployz.runtime.model import REQUEST_TIMEOUT_S, STOP_TIMEOUT_S, ContainerInfo, ServiceSpec
from ployz.zfs.resume import ResumeToken
from ployz.zfs.snapshots import Snapshot

T = TypeVar("T")

ANSWER_MARGIN_S = 30.0
"""Added to an operation's own time limit for its answer to come back."""
CONTAINER_WAIT_S = REQUEST_TIMEOUT_S + ANSWER_MARGIN_S
"""How long a container call waits for its answer: past the agent's own bound on the container
engine's answer. A start that took 30 s under a parallel drain's load was given up as an
unreachable agent while the agent still ran it."""
STATUS_WAIT_S = 5.0
"""How long a progress poll waits: the answer is immediate, and a late one is skipped."""
SEND_TIMEOUT_S = 24 * 3600.0
"""How long a send may take: it blocks its call until the receiver committed, and resumes
across broken connections on its own meanwhile."""


# The agent's answers, each read back as its method's return type.
_POOL = TypeAdapter(PoolCapacity)
_PROPS = TypeAdapter(Props)
_NONE = TypeAdapter(None)
_BOOL = TypeAdapter(bool)
_SNAPSHOTS = TypeAdapter(list[Snapshot])
_HOLDS = TypeAdapter(dict[str, int])
_STR = TypeAdapter(str)
_RESUME_TOKEN = TypeAdapter(ResumeToken | None)
_INT = TypeAdapter(int)
_OPTIONAL_INT = TypeAdapter(int | None)
_CONTAINER = TypeAdapter(ContainerInfo)
_CONTAINERS = TypeAdapter(list[ContainerInfo])
_ENDPOINT = TypeAdapter(ReceiveEndpoint)
_RECEIVE_STATE = TypeAdapter(ReceiveState)
_SEND_SUMMARY = TypeAdapter(SendSummary)
_SEND_STATUS = TypeAdapter(SendStatus)
_PARAMS = TypeAdapter(dict[str, Any])


class _Methods:
    def __init__(self, client: AgentClient) -> None:
        self._client = client

    def _call(self, answer: TypeAdapter[T], method: str, params: dict[str, Any] | None = None,
              wait_s: float | None = None) -> T:
        """``answer`` reads the answer as the agent's method returns it; ``wait_s`` bounds the
        wait for it (the client's default when None)."""
        wire = _PARAMS.dump_python(params or {}, mode="json")
        return answer.validate_python(self._client.call(method, wire, timeout_s=wait_s))


class RemoteZfs(_Methods, ZfsApi):
    def capacity(self) -> PoolCapacity:
        return self._call(_POOL, "zfs.capacity")

    def create(
        self,
        dataset: str,
        quota: int | None = None,
        mountpoint: str | None = None,
        props: SetProps | None = None,
    ) -> Props:
        return self._call(
            _PROPS,
            "zfs.create",
            {"dataset": dataset, "quota": quota, "mountpoint": mountpoint, "props": props},
        )

    def mount(self, dataset: str, mountpoint: str) -> None:
        self._call(_NONE, "zfs.mount", {"dataset": dataset, "mountpoint": mountpoint})

    def unmount(self, dataset: str) -> None:
        self._call(_NONE, "zfs.unmount", {"dataset": dataset})

    def exists(self, name: str) -> bool:
        return self._call(_BOOL, "zfs.exists", {"name": name})

    def get(self, name: str, props: list[str]) -> Props:
        return self._call(_PROPS, "zfs.get", {"name": name, "props": props})

    def written(self, datasets: list[str]) -> int:
        return self._call(_INT, "zfs.written", {"datasets": datasets})

    def bytes_written(self, datasets: list[str]) -> int | None:
        return self._call(_OPTIONAL_INT, "zfs.bytes_written", {"datasets": datasets})

    def snapshot(self, snapshots: list[str]) -> None:
        self._call(_NONE, "zfs.snapshot", {"snapshots": snapshots})

    def snapshots(self, dataset: str) -> list[Snapshot]:
        return self._call(_SNAPSHOTS, "zfs.snapshots", {"dataset": dataset})

    def hold(self, holds: dict[str, str]) -> None:
        self._call(_NONE, "zfs.hold", {"holds": holds})

    def release(self, holds: dict[str, list[str]]) -> None:
        self._call(_NONE, "zfs.release", {"holds": holds})

    def holds(self, snapshot: str) -> dict[str, int]:
        return self._call(_HOLDS, "zfs.holds", {"snapshot": snapshot})

    def destroy_snapshots(self, snapshots: list[str], defer: bool = False) -> None:
        self._call(_NONE, "zfs.destroy_snapshots", {"snapshots": snapshots, "defer": defer})

    def destroy(self, dataset: str) -> None:
        self._call(_NONE, "zfs.destroy", {"dataset": dataset})

    def rollback(self, dataset: str, snapshot: str | None = None) -> str:
        return self._call(_STR, "zfs.rollback", {"dataset": dataset, "snapshot": snapshot})

    def resume_token(self, dataset: str) -> ResumeToken | None:
        return self._call(_RESUME_TOKEN, "zfs.resume_token", {"dataset": dataset})

    def abort_receive(self, dataset: str) -> None:
        self._call(_NONE, "zfs.abort_receive", {"dataset": dataset})

    def send_space(self, snapshot: str, base: str | None = None) -> int:
        return self._call(_INT, "zfs.send_space", {"snapshot": snapshot, "base": base})


class RemoteContainers(_Methods, ContainerApi):
    def has_image(self, image: str) -> bool:
        return self._call(_BOOL, "container.has_image", {"image": image},
                          CONTAINER_WAIT_S)

    def create(self, spec: ServiceSpec) -> ContainerInfo:
        return self._call(_CONTAINER, "container.create", {"spec": spec},
                          CONTAINER_WAIT_S)

    def start(self, name: str) -> ContainerInfo:
        return self._call(_CONTAINER, "container.start", {"name": name},
                          CONTAINER_WAIT_S)

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> ContainerInfo:
        return self._call(
            _CONTAINER,
            "container.stop",
            {"name": name, "timeout_s": timeout_s},
            timeout_s + CONTAINER_WAIT_S,
        )

    def remove(self, name: str, force: bool = False) -> None:
        self._call(_NONE, "container.remove", {"name": name, "force": force},
                   CONTAINER_WAIT_S)

    def inspect(self, name: str) -> ContainerInfo:
        return self._call(_CONTAINER, "container.inspect", {"name": name},
                          CONTAINER_WAIT_S)

    def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        return self._call(_CONTAINERS, "container.list", {"labels": dict(labels)},
                          CONTAINER_WAIT_S)

    def wait_ready(self, name: str, timeout_s: float = 60.0) -> ContainerInfo:
        return self._call(
            _CONTAINER,
            "container.wait_ready",
            {"name": name, "timeout_s": timeout_s},
            timeout_s + ANSWER_MARGIN_S,
        )


class RemoteTransfer(_Methods, TransferApi):
    def receive(
        self,
        transfer_id: str,
        dataset: str,
        props: SetProps | None = None,
        secret: str | None = None,
    ) -> ReceiveEndpoint:
        return self._call(
            _ENDPOINT,
            "transfer.receive",
            {"transfer_id": transfer_id, "dataset": dataset, "props": props, "secret": secret},
        )

    def receive_wait(self, transfer_id: str, timeout_s: float = 30.0) -> ReceiveState:
        return self._call(
            _RECEIVE_STATE,
            "transfer.receive_wait",
            {"transfer_id": transfer_id, "timeout_s": timeout_s},
            timeout_s + ANSWER_MARGIN_S,
        )

    def receive_cancel(self, transfer_id: str) -> ReceiveState:
        return self._call(_RECEIVE_STATE, "transfer.receive_cancel", {"transfer_id": transfer_id})

    def send(
        self,
        transfer_id: str,
        snapshot: str,
        to: str,
        ticket: str,
        base: str | None = None,
        codec: str = "auto",
        bwlimit: float = 0.0,
        secret: str | None = None,
        encrypt: bool = False,
        limit_group: str | None = None,
    ) -> SendSummary:
        return self._call(
            _SEND_SUMMARY,
            "transfer.send",
            {
                "transfer_id": transfer_id,
                "snapshot": snapshot,
                "to": to,
                "ticket": ticket,
                "base": base,
                "codec": codec,
                "bwlimit": bwlimit,
                "secret": secret,
                "encrypt": encrypt,
                "limit_group": limit_group,
            },
            SEND_TIMEOUT_S,
        )

    def send_status(self, transfer_id: str) -> SendStatus:
        return self._call(_SEND_STATUS, "transfer.send_status", {"transfer_id": transfer_id},
                          STATUS_WAIT_S)

    def probe_receive(self, transfer_id: str, secret: str) -> ReceiveEndpoint:
        return self._call(_ENDPOINT, "transfer.probe_receive",
                          {"transfer_id": transfer_id, "secret": secret})

    def probe_send(self, transfer_id: str, to: str, ticket: str, secret: str,
                   seconds: float) -> SendSummary:
        return self._call(_SEND_SUMMARY, "transfer.probe_send",
                          {"transfer_id": transfer_id, "to": to, "ticket": ticket,
                           "secret": secret, "seconds": seconds},
                          seconds + ANSWER_MARGIN_S)


class RemoteAgent(Agent):
    """``RemoteAgent(AgentClient(address, key, machine_id))``: one connection, one thread."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client
        self._zfs = RemoteZfs(client)
        self._containers = RemoteContainers(client)
        self._transfer = RemoteTransfer(client)

    @property
    def address(self) -> str:
        return self._client.address

    @property
    def zfs(self) -> RemoteZfs:
        return self._zfs

    @property
    def containers(self) -> RemoteContainers:
        return self._containers

    @property
    def transfer(self) -> RemoteTransfer:
        return self._transfer

    def fork(self) -> RemoteAgent:
        return RemoteAgent(self._client.fork())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
