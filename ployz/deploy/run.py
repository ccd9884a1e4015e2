"""One deploy run, written once: what a plain deploy, a migration and a drain's migrations share.

Under the namespace deploy lock (renewed by a :class:`~ployz.control.LeaseKeeper`), a run

1. settles whatever earlier runs of the namespace left unfinished (a killed ``ployzctl``): it
   rolls back one that did not commit and finishes the cleanup of one that did, from its
   durable record alone (:func:`settle_unfinished`);
2. begins a deploy record and applies its kind's mutations, writing each into the record
   *before* making it (:meth:`DeployRun.save`), entering each phase with :meth:`DeployRun.step`
   (which checks the lock is still ours);
3. commits the changes with the lock's fencing token: the point of no return. A commit whose
   answer was lost is looked up before anything is undone;
4. on a failure before the commit, rolls back from the record and raises the kind's abort
   error; after it, cleans up, and a cleanup failure marks the deploy ``failed-after-commit``
   (the next run of the namespace finishes it).

A kind (:class:`RunKind`) says what its record holds and how to roll back and clean up from it;
its own phases are a function of the run. Progress is one stream of :data:`~.events.Event`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from pydantic import BaseModel

from ployz.agent.api import Agent
from ployz.agent.errors import AgentError
from ployz.control.errors import ControlPlaneError, StaleFencingToken
from ployz.control.keeper import LeaseKeeper
from ployz.control.leases import deploy_lock_name
from ployz.control.models import Change, Deploy, DeployPhase, DeployStatus, Lease
from ployz.control.plane import ControlPlane
from ployz.deploy.agents import AgentLookup, MachineAgents
from ployz.deploy.errors import DeployError
from ployz.deploy.events import (
    Aborted,
    Aborting,
    Emit,
    Event,
    Phase,
    Recover,
    RolledBack,
    RoutesConfirmed,
    RunCommitted,
    step,
)
from ployz.deploy.routes import RouteConfirmation, wait_for_routes

DEPLOY_LOCK_TTL_S = 1800.0
"""ployz's 30 minutes, renewed while a run holds the lock."""


class RunRecord(BaseModel):
    """What a run writes into its deploy record (``Deploy.detail``) before each mutation, so
    that whoever finds it after a crash can bring the run to an end state from it alone."""

    KIND: ClassVar[str]

    deploy_id: str
    namespace: str
    step: str = "lock"
    rolled_back: bool = False
    """Set once a rollback left nothing behind; one that could not finish is retried by the
    next run of the namespace."""

    def detail(self) -> dict[str, Any]:
        return {"kind": self.KIND, **self.model_dump(mode="json")}

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> Self:
        return cls.model_validate({k: v for k, v in detail.items() if k != "kind"})


R = TypeVar("R", bound=RunRecord)
R_co = TypeVar("R_co", bound=RunRecord, covariant=True)


@dataclass
class Outcome:
    """What a rollback or cleanup did, and what it could not do (each naming machine and
    object)."""

    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def attempt(self, description: str, action: Callable[[], bool]) -> None:
        """Runs ``action``; it returns whether it changed anything (only then is it
        reported)."""
        try:
            if action():
                self.done.append(description)
        except AgentError as exc:
            self.left.append(f"{description}: {exc}")


AgentOf = Callable[[str], Agent]
"""A machine id's agent."""


class RunKind(Protocol[R]):
    """What a kind of deploy adds to the run: its record and how to undo or finish it."""

    name: str

    def load(self, detail: Mapping[str, Any]) -> R: ...

    def roll_back(self, record: R, agent_of: AgentOf) -> Outcome:
        """Undoes every mutation the record names; idempotent, checking before each step."""
        ...

    def clean_up(self, record: R, agent_of: AgentOf) -> Outcome:
        """What follows the commit (old containers, migration snapshots); idempotent."""
        ...

    def aborted(self, record: R, cause: str, outcome: Outcome) -> DeployError:
        """The error of a run rolled back before its commit."""
        ...

    def failed_after_commit(self, record: R, seq: int, problems: list[str]) -> DeployError: ...


@dataclass(frozen=True)
class Settled:
    """An earlier run brought to an end: rolled back (``commit_seq`` None) or cleaned up."""

    record: RunRecord
    commit_seq: int | None


def new_deploy_id(digest: str) -> str:
    """The manifest's digest and a random suffix: two runs of one manifest stay apart."""
    return f"{digest}-{secrets.token_hex(4)}"


@contextmanager
def namespace_lock(cp: ControlPlane, namespace: str, holder: str,
                   emit: Emit) -> Iterator[LeaseKeeper]:
    """The namespace deploy lock, renewed while the block runs and released after it."""
    lock = deploy_lock_name(namespace)
    lease: Lease = cp.acquire(lock, holder, DEPLOY_LOCK_TTL_S)
    emit(step(f"acquired the deploy lock of {namespace} (token {lease.token})"))
    try:
        with LeaseKeeper(cp, lease, DEPLOY_LOCK_TTL_S) as keeper:
            yield keeper
    finally:
        with contextlib.suppress(StaleFencingToken):
            cp.release(lock, lease.token)
        emit(step(f"released the deploy lock of {namespace}"))


def unfinished(cp: ControlPlane, namespace: str) -> list[Deploy]:
    """Runs of ``namespace`` that a killed or failed ``ployzctl`` left to settle."""
    return [d for d in cp.list_deploys(namespace)
            if d.status == "applying" or d.status == "failed-after-commit"
            or (d.status == "committed" and d.phase != "done")
            or (d.status == "failed" and not d.detail.get("rolled_back", True))]


def settle_unfinished(cp: ControlPlane, agents: AgentLookup, namespace: str,
                      kinds: Mapping[str, RunKind[Any]], emit: Emit) -> list[Settled]:
    """Settles every unfinished run of ``namespace``; call with its deploy lock held. A run
    whose rollback leaves something behind raises its kind's abort error."""
    settled = []
    agent_of = MachineAgents(cp, agents)
    for deploy in unfinished(cp, namespace):
        kind = kinds.get(str(deploy.detail.get("kind")))
        if kind is None:  # a record of no known kind has nothing to undo from
            continue
        settled.append(_settle(cp, agent_of, kind, deploy, emit))
    return settled


def _settle(cp: ControlPlane, agent_of: AgentOf, kind: RunKind[R], deploy: Deploy,
            emit: Emit) -> Settled:
    record = kind.load(deploy.detail)
    deploy = cp.get_deploy(deploy.id)  # settles a commit whose roll-forward is pending
    if deploy.commit_seq is None:
        emit(Recover(deploy_id=deploy.id, action="roll-back", step=record.step))
        outcome = kind.roll_back(record, agent_of)
        _record_rollback(cp, record, deploy, outcome, "interrupted; rolled back by a later run")
        emit(RolledBack(deploy_id=deploy.id, undone=outcome.done, left=outcome.left))
        if outcome.left:
            raise kind.aborted(record, "an earlier interrupted run", outcome)
        return Settled(record, None)
    emit(Recover(deploy_id=deploy.id, action="cleanup", step=record.step))
    _finish(cp, kind, record, agent_of, deploy.commit_seq, emit)
    return Settled(record, deploy.commit_seq)


def _record_rollback(cp: ControlPlane, record: RunRecord, deploy: Deploy, outcome: Outcome,
                     reason: str) -> None:
    record.rolled_back = not outcome.left
    status: DeployStatus | None = "failed" if deploy.status == "applying" else None
    with contextlib.suppress(ControlPlaneError):
        cp.update_deploy(record.deploy_id, status=status, reason=reason, detail=record.detail())


def _finish(cp: ControlPlane, kind: RunKind[R], record: R, agent_of: AgentOf, seq: int,
            emit: Emit) -> None:
    """Cleanup after the commit; failed-after-commit if any of it fails."""
    record.step = "cleanup"
    cp.update_deploy(record.deploy_id, phase="cleanup", detail=record.detail())
    emit(Phase(phase="cleanup"))
    outcome = kind.clean_up(record, agent_of)
    for done in outcome.done:
        emit(step(done))
    if outcome.left:
        cp.update_deploy(record.deploy_id, status="failed-after-commit",
                         reason="; ".join(outcome.left))
        raise kind.failed_after_commit(record, seq, outcome.left)
    status: DeployStatus | None = ("committed" if cp.get_deploy(record.deploy_id).status
                                   != "committed" else None)
    record.step = "done"
    cp.update_deploy(record.deploy_id, phase="done", status=status, detail=record.detail())


Phases = Callable[["DeployRun[R]"], list[Change]]
"""A kind's mutations before the commit, made through the run; returns the commit's changes."""


class DeployRun(Generic[R]):
    """One run under the lock: its record, its phases, its commit, its rollback or cleanup."""

    def __init__(self, cp: ControlPlane, agents: AgentLookup, kind: RunKind[R], record: R,
                 keeper: LeaseKeeper, emit: Emit) -> None:
        self.cp = cp
        self.agents = agents
        self.agent_of: AgentOf = MachineAgents(cp, agents)
        self.kind = kind
        self.record = record
        self.keeper = keeper
        self.emit = emit
        self.routes: RouteConfirmation | None = None
        """Set once the commit's routing was waited for."""

    @property
    def deploy_id(self) -> str:
        return self.record.deploy_id

    def save(self, phase: DeployPhase | None = None) -> None:
        """Writes the record: call before each mutation it names."""
        self.cp.update_deploy(self.deploy_id, phase=phase, detail=self.record.detail())

    def step(self, name: str, phase: DeployPhase | None = None) -> None:
        """Enters a step: checks the lock is still ours, records it, tells the listener."""
        self.keeper.check()
        self.record.step = name
        self.save(phase)
        self.emit(Phase(phase=name))

    def execute(self, phases: Phases[R], started: Event | None = None) -> int:
        """Begins the deploy, runs ``phases``, commits; returns the commit's number. Raises
        the kind's abort error after a rollback, or its failed-after-commit error."""
        self.cp.begin_deploy(self.record.namespace, self.kind.name, self.deploy_id,
                             detail=self.record.detail())
        if started is not None:
            self.emit(started)
        try:
            changes = phases(self)
            self.step("commit", phase="commit")
            seq = self.cp.commit(self.record.namespace, self.keeper.check().token, changes,
                                 deploy_id=self.deploy_id).seq
        except (Exception, KeyboardInterrupt) as exc:
            landed = self._committed_seq()
            if landed is None:
                raise self._aborted(exc) from exc
            seq = landed
        self.emit(RunCommitted(deploy_id=self.deploy_id, commit=seq))
        self.routes = wait_for_routes(self.cp, self.record.namespace, seq,
                                      self.agents.route_wait_s)
        self.emit(RoutesConfirmed(**asdict(self.routes)))
        _finish(self.cp, self.kind, self.record, self.agent_of, seq, self.emit)
        return seq

    def _committed_seq(self) -> int | None:
        """The commit's number if it landed although its call failed, else None."""
        try:
            return self.cp.get_deploy(self.deploy_id).commit_seq
        except ControlPlaneError:
            return None

    def _aborted(self, exc: BaseException) -> DeployError:
        """Rolls back from the record; the kind's error saying what was undone and left."""
        at = self.record.step
        cause = f"lock-lost: {exc}" if isinstance(exc, StaleFencingToken) else str(exc)
        self.emit(Aborting(step=at, error=cause))
        outcome = self.kind.roll_back(self.record, self.agent_of)
        _record_rollback(self.cp, self.record, self.cp.get_deploy(self.deploy_id), outcome,
                         cause)
        self.emit(Aborted(deploy_id=self.deploy_id, step=at, error=cause, undone=outcome.done,
                          left=outcome.left))
        return self.kind.aborted(self.record, cause, outcome)

