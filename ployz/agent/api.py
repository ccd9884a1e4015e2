"""What an agent offers, as typed interfaces and the models its answers carry.

The agent's method groups implement these protocols on the machine (``zfs.*`` by
:class:`~ployz.agent.methods.zfs_ops.ZFSMethods`, ``container.*`` by the runtime,
``transfer.*`` by :class:`~ployz.agent.methods.transfers.TransferMethods`), and
:class:`~ployz.agent.remote.RemoteAgent` implements them over the RPC. The orchestrator is
written against :class:`Agent` alone, so its phases run the same against a real agent and
against an in-memory fake in a unit test, and a call that does not match a method is a type
error, not a refusal at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from ployz.runtime.model import STOP_TIMEOUT_S, ContainerInfo, ServiceSpec
from ployz.zfs.resume import ResumeToken
from ployz.zfs.snapshots import Snapshot

Props = dict[str, int | str | None]
"""ZFS properties by name, as read: numbers as integers, text otherwise, None when unset."""
SetProps = dict[str, int | str]
"""ZFS properties to set."""


def int_prop(props: Props, name: str) -> int:
    """A numeric property of an answer; anything else there is the agent's mistake."""
    value = props.get(name)
    if not isinstance(value, int):
        raise TypeError(f"property {name} is {value!r}, not a number")
    return value


def str_prop(props: Props, name: str) -> str:
    value = props.get(name)
    if not isinstance(value, str):
        raise TypeError(f"property {name} is {value!r}, not text")
    return value


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class PoolCapacity(_Answer):
    """Free and used bytes of the agent's pool, from its root dataset."""

    pool: str
    free: int
    used: int


class ReceiveEndpoint(_Answer):
    """Where the receiver of one transfer listens, for the sender to connect to."""

    address: str


class Committed(_Answer):
    """What a receiver committed, its acknowledgement: the evidence a migration records.
    ``snapshot`` and ``guid`` for a ZFS sink, ``path`` for a file sink; a probe keeps nothing."""

    kind: Literal["zfs", "file", "probe"]
    size: int
    checksum: str
    snapshot: str | None = None
    guid: int | None = None
    path: str | None = None


class TransferSummary(_Answer):
    """One transfer's outcome, as either end saw it."""

    bytes: int
    wire_bytes: int
    seconds: float
    resumes: int
    codec: str
    committed: Committed
    resumed_bytes: int = 0
    encrypted: bool = False
    transfer_id: str = ""


class SendSummary(TransferSummary):
    frames_zstd: int = 0
    frames_raw: int = 0
    frames_spliced: int = 0
    notices: tuple[str, ...] = ()
    receiver_verified: bool = False


class ReceiveSummary(TransferSummary):
    refused: int = 0
    """Connections the receiver turned away (bad proof, wrong ticket, too many waiting)."""


class ReceiveState(_Answer):
    """A receive while it runs (``result`` and ``error`` None) or once it ended."""

    state: Literal["running", "failed", "committed"]
    result: ReceiveSummary | None = None
    error: str | None = None


class SendStatus(_Answer):
    """The latest progress sample of a running send: ``bytes`` of the stream sent, ``total``
    (the estimate; None while unknown), ``rate`` in bytes per second, ``eta_s`` (None while
    unknown), ``finished`` once the receiver committed."""

    bytes: int
    total: int | None
    wire_bytes: int
    rate: float
    eta_s: float | None
    finished: bool


class ZfsApi(Protocol):
    """``zfs.*``: the ZFS operations of the agent's pool (every name is confined to it)."""

    def capacity(self) -> PoolCapacity: ...

    def create(self, dataset: str, quota: int | None = None, mountpoint: str | None = None,
               props: SetProps | None = None) -> Props: ...

    def mount(self, dataset: str, mountpoint: str) -> None: ...

    def unmount(self, dataset: str) -> None: ...

    def exists(self, name: str) -> bool: ...

    def get(self, name: str, props: list[str]) -> Props: ...

    def written(self, datasets: list[str]) -> int: ...

    def bytes_written(self, datasets: list[str]) -> int | None: ...

    def snapshot(self, snapshots: list[str]) -> None: ...

    def snapshots(self, dataset: str) -> list[Snapshot]: ...

    def hold(self, holds: dict[str, str]) -> None: ...

    def release(self, holds: dict[str, list[str]]) -> None: ...

    def holds(self, snapshot: str) -> dict[str, int]: ...

    def destroy_snapshots(self, snapshots: list[str], defer: bool = False) -> None: ...

    def destroy(self, dataset: str) -> None: ...

    def rollback(self, dataset: str, snapshot: str | None = None) -> str: ...

    def resume_token(self, dataset: str) -> ResumeToken | None: ...

    def abort_receive(self, dataset: str) -> None: ...

    def send_space(self, snapshot: str, base: str | None = None) -> int: ...


class ContainerApi(Protocol):
    """``container.*``: the machine's containers, as :mod:`ployz.runtime` runs them."""

    def has_image(self, image: str) -> bool: ...

    def create(self, spec: ServiceSpec) -> ContainerInfo: ...

    def start(self, name: str) -> ContainerInfo: ...

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> ContainerInfo: ...

    def remove(self, name: str, force: bool = False) -> None: ...

    def inspect(self, name: str) -> ContainerInfo: ...

    def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]: ...

    def wait_ready(self, name: str, timeout_s: float = 60.0) -> ContainerInfo: ...


class TransferApi(Protocol):
    """``transfer.*``: receivers this agent hosts and sends it makes to other agents."""

    def receive(self, transfer_id: str, dataset: str, props: SetProps | None = None,
                secret: str | None = None) -> ReceiveEndpoint: ...

    def receive_wait(self, transfer_id: str, timeout_s: float = 30.0) -> ReceiveState: ...

    def receive_cancel(self, transfer_id: str) -> ReceiveState: ...

    def send(self, transfer_id: str, snapshot: str, to: str, ticket: str,
             base: str | None = None, codec: str = "auto", bwlimit: float = 0.0,
             secret: str | None = None, encrypt: bool = False,
             limit_group: str | None = None) -> SendSummary: ...

    def send_status(self, transfer_id: str) -> SendStatus: ...

    def probe_receive(self, transfer_id: str, secret: str) -> ReceiveEndpoint: ...

    def probe_send(self, transfer_id: str, to: str, ticket: str, secret: str,
                   seconds: float) -> SendSummary: ...


class Agent(Protocol):
    """One machine's agent, as the orchestrator uses it."""

    @property
    def address(self) -> str:
        """Where it is reached, for messages."""
        ...

    @property
    def zfs(self) -> ZfsApi: ...

    @property
    def containers(self) -> ContainerApi: ...

    @property
    def transfer(self) -> TransferApi: ...

    def fork(self) -> Agent:
        """The same agent for another thread: a call blocks the connection it runs on (a send
        lasts as long as its stream), so a thread polling meanwhile needs its own."""
        ...

    def close(self) -> None:
        """Lets go of the connection (a forked agent's, once its thread is done)."""
        ...
