"""Progress of a deploy run (a plain deploy, a migration, a drain) as typed events, one class per
kind. :meth:`Event.to_json` is the object ``--json`` prints, one per line, with the kind under
``"event"``: a script can act on a phase boundary by reading ``{"event": "phase", ...}`` lines.
A drain tags each event of a service's migration with ``service``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    KIND: ClassVar[str]
    service: str | None = None
    """The service a drain is moving when this happened; None outside a drain."""

    def to_json(self) -> dict[str, Any]:
        fields = self.model_dump(mode="json")
        if fields["service"] is None:
            del fields["service"]
        return {"event": self.KIND, **fields}


Emit = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default listener."""


class Step(Event):
    """Something done, for a person to read."""

    KIND = "step"
    message: str


def step(message: str) -> Step:
    return Step(message=message)


class Phase(Event):
    """A phase (or a migration's step) begins; it is recorded before it is announced."""

    KIND = "phase"
    phase: str


class Started(Event):
    """A migration's run began, with its plan."""

    KIND = "start"
    deploy_id: str
    plan: dict[str, Any]


class _OfASend(Event):
    """An event of one send: the volume, its pre-copy round, and the send's kind (``full``,
    ``incremental``, ``final``)."""

    volume: str
    round: int
    kind: str


class TransferStarted(_OfASend):
    KIND = "transfer"
    state: Literal["started"] = "started"
    snapshot: str
    estimate: int


class TransferDone(_OfASend):
    KIND = "transfer"
    state: Literal["done"] = "done"
    bytes: int
    wire_bytes: int
    seconds: float
    resumes: int
    codec: str
    resumed_bytes: int = 0
    """The stream bytes the receiver already held when the last attempt began (resumed)."""


class TransferInterrupted(_OfASend):
    """A send was interrupted (an agent restarting, a lost connection, a stall) and goes on
    from where its receiver's resume point is."""

    KIND = "transfer"
    state: Literal["interrupted"] = "interrupted"
    reason: str
    sent_bytes: int | None
    """What the interrupted attempt had sent (None: its agent could not say)."""


class TransferProgress(_OfASend):
    """A send's progress, about once a second: bytes sent, their expected total, bytes per
    second, seconds left (None while unknown)."""

    KIND = "progress"
    bytes: int
    total: int | None
    rate: float
    eta_s: float | None


class RunCommitted(Event):
    KIND = "committed"
    deploy_id: str
    commit: int


class RoutesConfirmed(Event):
    """Which live machines applied the routing of the run's commit (``version``), and which
    had not when the bounded wait ended."""

    KIND = "routes"
    namespace: str
    version: int
    confirmed: list[str]
    missing: list[str]
    seconds: float


class Done(Event):
    """A migration ended committed: where the service runs now, and its cutover."""

    KIND = "done"
    status: Literal["committed"] = "committed"
    deploy_id: str
    commit: int
    source: str
    target: str
    cutover_s: dict[str, float]
    seconds: float | None
    routes: dict[str, Any] | None = None
    """The commit's route confirmation (version, confirmed, missing, seconds)."""
    estimate: dict[str, Any] | None = None
    """What the plan predicted: ``initial_bytes``, ``final_bytes``, ``seconds``,
    ``window_seconds``, ``link_bytes_per_s``, ``write_bytes_per_s``."""
    actual: dict[str, Any] | None = None
    """The same figures as the run measured them."""


class Recover(Event):
    """An earlier run left unfinished is being settled: rolled back, or its cleanup finished."""

    KIND = "recover"
    deploy_id: str
    action: Literal["roll-back", "cleanup"]
    step: str


class RolledBack(Event):
    KIND = "rolled-back"
    deploy_id: str
    undone: list[str]
    left: list[str]


class Aborting(Event):
    KIND = "aborting"
    step: str
    error: str


class Aborted(Event):
    KIND = "aborted"
    deploy_id: str
    step: str
    error: str
    undone: list[str]
    left: list[str]


class Draining(Event):
    """A drain moves ``service`` to ``target``."""

    KIND = "drain"
    service: str
    target: str
