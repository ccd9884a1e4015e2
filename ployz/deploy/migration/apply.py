"""``migrate apply``: move a service and its volumes to another machine as one deploy.

Phases (ployz's plan / apply / commit / cleanup, with the apply phase split into the steps that
move data):

1. lock: the namespace deploy lock, held under a stable holder per service and renewed by a
   :class:`~ployz.control.LeaseKeeper` while the data moves;
2. pre-copy, with the service running: a snapshot and a full send, then incremental rounds
   until less than :data:`~ployz.deploy.migration.plan.FINAL_DELTA` was written since the last
   one (at most :data:`~ployz.deploy.migration.plan.MAX_PRECOPY_ROUNDS`); each snapshot is held
   so nothing can destroy the incremental base. It ends by mounting the received datasets on the
   target and creating (not starting) the container there, with the same image and
   configuration: creation costs seconds that need not fall in the cutover window, and the
   final incremental receives into a mounted, untouched dataset like any other;
3. fence: the source container stops (no more writes), the final snapshots are taken;
4. final-send: the last incremental, small by construction;
5. start: the prepared container starts on the target and is waited for (healthy, if it has a
   check);
6. commit: volume owner and dataset, placement, route and the receiver's evidence, atomically
   and only while the lock's fencing token is current. The point of no return;
7. cleanup: old container removed, holds released, migration snapshots destroyed, the source
   dataset destroyed (kept with ``keep_source``), lock released.

Every mutation is recorded in the deploy record first (:mod:`.record`). A failure before the
commit rolls back (:func:`.settle.roll_back`) and raises :class:`MigrationAborted`; after it, a
cleanup failure marks the deploy failed-after-commit. ``apply`` run again first settles any
migration of the namespace left unfinished by a killed run: it rolls back one that did not
commit and finishes the cleanup of one that did. Ownership changes only in the commit, so a
volume is always owned by exactly one machine.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ployz.agent.client import AgentClient
from ployz.control.errors import ControlPlaneError, StaleFencingToken
from ployz.control.keeper import LeaseKeeper
from ployz.control.leases import deploy_lock_name
from ployz.control.models import (
    Change,
    Deploy,
    DeployPhase,
    DeployStatus,
    PutService,
    PutVolume,
    RecordTransfer,
    Route,
    SetRoute,
    TransferEvidence,
    utcnow,
)
from ployz.control.plane import ControlPlane
from ployz.deploy.agents import AgentDirectory
from ployz.deploy.apply import DEPLOY_LOCK_TTL_S, READY_TIMEOUT_S
from ployz.deploy.migration.errors import MigrationAborted, MigrationFailedAfterCommit
from ployz.deploy.migration.events import Emit, ignore
from ployz.deploy.migration.plan import (
    FINAL_DELTA,
    MAX_PRECOPY_ROUNDS,
    MigrationPlan,
    machine_map,
    plan_migration,
)
from ployz.deploy.migration.record import (
    KIND,
    MigrationRecord,
    VolumeRecord,
    snapshot_name,
)
from ployz.deploy.migration.ref import ServiceRef
from ployz.deploy.migration.settle import Machines, Outcome, clean_up, roll_back
from ployz.deploy.migration.target import prepare_container
from ployz.deploy.migration.transfer import SendResult, send_snapshot
from ployz.deploy.specs import service_fact
from ployz.runtime.model import LABEL_DEPLOY, service_labels

STOP_TIMEOUT_S = 10.0


@dataclass
class MigrationResult:
    deploy_id: str
    commit_seq: int
    source: str
    target: str
    cutover: dict[str, float] = field(default_factory=dict)
    """Seconds of each step from writes stopped to the target container ready (stop,
    final_snapshot, final_send, start, ready), and ``total``."""
    seconds: float | None = None
    """The whole run, lock to lock release; None for a run that only finished a cleanup."""

    def to_json(self) -> dict[str, Any]:
        return {"deploy_id": self.deploy_id, "commit": self.commit_seq, "source": self.source,
                "target": self.target, "cutover_s": self.cutover, "seconds": self.seconds}


def migrate(
    cp: ControlPlane,
    agents: AgentDirectory,
    ref: ServiceRef,
    to_machine: str,
    *,
    keep_source: bool = False,
    emit: Emit = ignore,
) -> MigrationResult:
    """Moves ``ref`` to ``to_machine``; see the module docstring for the phases and errors."""
    pending = unfinished(cp, ref.namespace)
    if not pending:
        # Refusals before anything is written, not even the lock.
        plan_migration(cp, agents, ref, to_machine).check_room()
    emit({"event": "phase", "phase": "lock"})
    started = time.monotonic()
    lock = deploy_lock_name(ref.namespace)
    lease = cp.acquire(lock, ref.holder, DEPLOY_LOCK_TTL_S)
    emit({"event": "step", "message": f"acquired the deploy lock of {ref.namespace} "
                                      f"(token {lease.token})"})
    try:
        with LeaseKeeper(cp, lease, DEPLOY_LOCK_TTL_S) as keeper:
            result = _settle_all(cp, agents, pending, ref, to_machine, emit)
            if result is None:
                plan = plan_migration(cp, agents, ref, to_machine)
                plan.check_room()
                result = _Run(cp, agents, plan, keeper, keep_source, emit).run()
    finally:
        with contextlib.suppress(StaleFencingToken):
            cp.release(lock, lease.token)
        emit({"event": "step", "message": f"released the deploy lock of {ref.namespace}"})
    result.seconds = round(time.monotonic() - started, 3)
    emit({"event": "done", "status": "committed", **result.to_json()})
    return result


def _settle_all(cp: ControlPlane, agents: AgentDirectory, pending: list[Deploy],
                ref: ServiceRef, to_machine: str, emit: Emit) -> MigrationResult | None:
    """Settles the unfinished migrations; returns the one that already moved ``ref`` to
    ``to_machine``, if any (nothing is left to do then)."""
    finished = None
    for deploy in pending:
        result = settle(cp, agents, deploy, emit)
        if result and (result.target, deploy.detail.get("service")) == (to_machine, ref.service):
            finished = result
    return finished


def unfinished(cp: ControlPlane, namespace: str) -> list[Deploy]:
    """Migrations of ``namespace`` a killed or failed run left to settle."""
    found = []
    for deploy in cp.list_deploys(namespace):
        if deploy.detail.get("kind") != KIND:
            continue
        if deploy.status == "applying" or deploy.status == "failed-after-commit" or (
                deploy.status == "committed" and deploy.phase != "done") or (
                deploy.status == "failed" and not deploy.detail.get("rolled_back", True)):
            found.append(deploy)
    return found


def settle(cp: ControlPlane, agents: AgentDirectory, deploy: Deploy,
           emit: Emit) -> MigrationResult | None:
    """Rolls back an unfinished migration that did not commit (None) or finishes the cleanup
    of one that did (its result). Call with the namespace's deploy lock held."""
    record = MigrationRecord.from_detail(deploy.detail)
    machines = _machines(cp, agents, record)
    deploy = cp.get_deploy(deploy.id)  # settles a commit whose roll-forward is pending
    if deploy.commit_seq is None:
        emit({"event": "recover", "deploy_id": deploy.id, "action": "roll-back",
              "step": record.step})
        outcome = roll_back(record, machines)
        _record_rollback(cp, record, deploy, outcome, "interrupted; rolled back by a later apply")
        emit({"event": "rolled-back", "deploy_id": deploy.id, "undone": outcome.done,
              "left": outcome.left})
        if outcome.left:
            raise MigrationAborted(deploy.id, record.step, "an earlier interrupted run",
                                   outcome.done, outcome.left)
        return None
    emit({"event": "recover", "deploy_id": deploy.id, "action": "cleanup", "step": record.step})
    _finish(cp, record, machines, deploy.commit_seq, emit)
    return MigrationResult(deploy.id, deploy.commit_seq, record.source, record.target)


def _machines(cp: ControlPlane, agents: AgentDirectory, record: MigrationRecord) -> Machines:
    machines = machine_map(cp)
    return Machines(agents.client(machines[record.source]), agents.client(machines[record.target]))


def _record_rollback(cp: ControlPlane, record: MigrationRecord, deploy: Deploy,
                     outcome: Outcome, reason: str) -> None:
    record.rolled_back = not outcome.left
    status: DeployStatus | None = "failed" if deploy.status == "applying" else None
    with contextlib.suppress(ControlPlaneError):
        cp.update_deploy(record.deploy_id, status=status, reason=reason, detail=record.detail())


def _finish(cp: ControlPlane, record: MigrationRecord, machines: Machines, seq: int,
            emit: Emit) -> None:
    """Cleanup after the commit; failed-after-commit if any of it fails."""
    emit({"event": "phase", "phase": "cleanup"})
    cp.update_deploy(record.deploy_id, phase="cleanup")
    outcome = clean_up(record, machines)
    for done in outcome.done:
        emit({"event": "step", "message": done})
    if outcome.left:
        cp.update_deploy(record.deploy_id, status="failed-after-commit",
                         reason="; ".join(outcome.left))
        raise MigrationFailedAfterCommit(record.deploy_id, seq, outcome.left)
    status: DeployStatus | None = ("committed" if cp.get_deploy(record.deploy_id).status
                                   != "committed" else None)
    record.step = "done"
    cp.update_deploy(record.deploy_id, phase="done", status=status, detail=record.detail())


class _Run:
    """One migration under the lock: its record, its phases, its rollback."""

    def __init__(self, cp: ControlPlane, agents: AgentDirectory, plan: MigrationPlan,
                 keeper: LeaseKeeper, keep_source: bool, emit: Emit) -> None:
        self.cp = cp
        self.key = agents.key
        self.plan = plan
        self.keeper = keeper
        self.emit = emit
        machines = machine_map(cp)
        self.source = agents.client(machines[plan.source])
        self.target = agents.client(machines[plan.target])
        self.record = MigrationRecord(
            deploy_id=f"{plan.digest}-{secrets.token_hex(4)}", namespace=plan.ref.namespace,
            service=plan.ref.service, source=plan.source, target=plan.target,
            digest=plan.digest, keep_source=keep_source,
            volumes=[VolumeRecord(name=v.name, source_dataset=v.source_dataset,
                                  target_dataset=v.target_dataset, size=v.size)
                     for v in plan.volumes])
        self.cutover: dict[str, float] = {}
        self.container = ""
        """The target container, created at the end of pre-copy."""
        self.quotas = {name: v.quota for name, v in cp.namespace(plan.ref.namespace)
                       .volumes.items()}
        """Set on each target dataset by its full receive, as a deploy sets them at creation."""

    @property
    def deploy_id(self) -> str:
        return self.record.deploy_id

    def run(self) -> MigrationResult:
        self.cp.begin_deploy(self.plan.ref.namespace, KIND, self.deploy_id,
                             detail=self.record.detail())
        self.emit({"event": "start", "deploy_id": self.deploy_id,
                   "plan": self.plan.to_json()})
        try:
            self._save(phase="apply")
            self._pre_copy()
            self._prepare()
            fenced = time.monotonic()
            self._fence()
            self._final_send()
            self._start()
            self.cutover["total"] = round(time.monotonic() - fenced, 3)
            changes = self._changes()
            self._step("commit", phase="commit")
            seq = self.cp.commit(self.plan.ref.namespace, self.keeper.check().token, changes,
                                 deploy_id=self.deploy_id).seq
        except (Exception, KeyboardInterrupt) as exc:
            landed = self._committed_seq()
            if landed is None:
                self._abort(exc)
            seq = landed
        self.emit({"event": "committed", "deploy_id": self.deploy_id, "commit": seq})
        _finish(self.cp, self.record, Machines(self.source, self.target), seq, self.emit)
        return MigrationResult(self.deploy_id, seq, self.plan.source, self.plan.target,
                               self.cutover)

    # --- bookkeeping -------------------------------------------------------------------------

    def _save(self, phase: DeployPhase | None = None) -> None:
        self.cp.update_deploy(self.deploy_id, phase=phase, detail=self.record.detail())

    def _step(self, step: str, phase: DeployPhase | None = None) -> None:
        """Enters a step: checks the lock is still ours, records it, tells the listener."""
        self.keeper.check()
        self.record.step = step
        self._save(phase)
        self.emit({"event": "phase", "phase": step})

    def _committed_seq(self) -> int | None:
        """The commit's number if it landed although its call failed, else None."""
        try:
            return self.cp.get_deploy(self.deploy_id).commit_seq
        except ControlPlaneError:
            return None

    def _abort(self, exc: BaseException) -> NoReturn:
        step = self.record.step
        cause = f"lock-lost: {exc}" if isinstance(exc, StaleFencingToken) else str(exc)
        self.emit({"event": "aborting", "step": step, "error": cause})
        outcome = roll_back(self.record, Machines(self.source, self.target))
        deploy = self.cp.get_deploy(self.deploy_id)
        _record_rollback(self.cp, self.record, deploy, outcome, cause)
        self.emit({"event": "aborted", "deploy_id": self.deploy_id, "step": step,
                   "error": cause, "undone": outcome.done, "left": outcome.left})
        raise MigrationAborted(self.deploy_id, step, cause, outcome.done, outcome.left) from exc

    # --- pre-copy, fence, final send ---------------------------------------------------------

    def _pre_copy(self) -> None:
        self._step("pre-copy")
        for volume in self.record.volumes:
            self._send_round(volume, 1)
            for round_ in range(2, MAX_PRECOPY_ROUNDS + 2):
                written = self.source.call("zfs.get", {"name": volume.source_dataset,
                                                       "props": ["written"]})["written"]
                if written < FINAL_DELTA:
                    break
                self.keeper.check()
                self._send_round(volume, round_)

    def _send_round(self, volume: VolumeRecord, round_: int) -> None:
        snapshot = f"{volume.source_dataset}@{snapshot_name(self.plan.digest, volume.name, round_)}"
        self._snapshot(volume, [snapshot])
        self._send(volume, snapshot, "full" if round_ == 1 else "incremental", round_)

    def _snapshot(self, volume: VolumeRecord | None, snapshots: list[str]) -> None:
        """Takes ``snapshots`` at once and holds them, recorded first."""
        volumes = [volume] if volume else self.record.volumes
        for v, snapshot in zip(volumes, snapshots, strict=True):
            v.snapshots.append(snapshot)
            v.held.append(snapshot)
        self._save()
        self.source.call("zfs.snapshot", {"snapshots": snapshots})
        self.source.call("zfs.hold", {"holds": dict.fromkeys(snapshots, self.record.hold_tag)})

    def _send(self, volume: VolumeRecord, snapshot: str, kind: str, round_: int) -> SendResult:
        base = volume.sent[-1] if volume.sent else None
        transfer_id = f"{self.deploy_id}-{volume.name}-{round_}"
        self.record.transfers.append(transfer_id)
        self._save()
        estimate = self.source.call("zfs.send_space", {"snapshot": snapshot, "base": base})
        self.emit({"event": "transfer", "state": "started", "volume": volume.name,
                   "round": round_, "kind": kind, "snapshot": snapshot, "estimate": estimate})
        result = send_snapshot(
            self.source, self.target, self.key, transfer_id=transfer_id, snapshot=snapshot,
            base=base, target_dataset=volume.target_dataset, total=estimate,
            props={"quota": quota} if base is None and (quota := self.quotas.get(volume.name))
            else None,
            on_progress=lambda p: self.emit({"event": "progress", "volume": volume.name,
                                             "round": round_, "kind": kind, **p}))
        volume.sent.append(snapshot)
        if base is not None:
            # The new snapshot is the incremental base now; the old one need not be kept.
            self.source.call("zfs.release", {"holds": {base: [self.record.hold_tag]}})
            volume.held.remove(base)
        self._save()
        self.emit({"event": "transfer", "state": "done", "volume": volume.name,
                   "round": round_, "kind": kind, "bytes": result.bytes,
                   "wire_bytes": result.wire_bytes, "seconds": result.seconds,
                   "resumes": result.resumes, "codec": result.codec})
        return result

    def _fence(self) -> None:
        self._step("fence")
        started = time.monotonic()
        running = [c["name"] for c in self._service_containers(self.source)
                   if c["state"] == "running"]
        self.record.stopped = running
        self._save()
        for name in running:
            self.source.call("container.stop", {"name": name, "timeout_s": STOP_TIMEOUT_S},
                             timeout_s=STOP_TIMEOUT_S + 30)
            self.emit({"event": "step", "message": f"stopped {name} on {self.plan.source}"})
        self.cutover["stop"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        if self.record.volumes:
            self._snapshot(None, [f"{v.source_dataset}@{snapshot_name(self.plan.digest, v.name)}"
                                  for v in self.record.volumes])
        self.cutover["final_snapshot"] = round(time.monotonic() - started, 3)

    def _final_send(self) -> None:
        self._step("final-send")
        started = time.monotonic()
        for volume in self.record.volumes:
            snapshot = volume.snapshots[-1]
            base = volume.sent[-1]
            result = self._send(volume, snapshot, "final", len(volume.snapshots))
            volume.evidence = {
                **result.committed, "source_guid": self.source.call(
                    "zfs.get", {"name": snapshot, "props": ["guid"]})["guid"],
                "base_guid": self.source.call("zfs.get", {"name": base,
                                                          "props": ["guid"]})["guid"],
                "acknowledged_at": utcnow().isoformat(),
            }
        self._save()
        self.cutover["final_send"] = round(time.monotonic() - started, 3)

    # --- start on the target, commit ---------------------------------------------------------

    def _prepare(self) -> None:
        """Mounts the received datasets and creates the container on the target, unstarted."""
        self.container = prepare_container(
            self.target, self.plan.manifest, self.plan.ref.service, self.deploy_id,
            self.plan.room.pool, {v.name: v.target_dataset for v in self.record.volumes})
        self.emit({"event": "step", "message": f"created {self.container} on "
                                               f"{self.plan.target} (starts after the fence)"})

    def _start(self) -> None:
        self._step("start")
        started = time.monotonic()
        self.target.call("container.start", {"name": self.container})
        self.cutover["start"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        self.target.call("container.wait_ready",
                         {"name": self.container, "timeout_s": READY_TIMEOUT_S},
                         timeout_s=READY_TIMEOUT_S + 30)
        self.cutover["ready"] = round(time.monotonic() - started, 3)
        self.emit({"event": "step", "message": f"started {self.container} on "
                                               f"{self.plan.target}"})

    def _changes(self) -> list[Change]:
        ns, target = self.plan.ref.namespace, self.plan.target
        state = self.cp.namespace(ns)
        manifest = self.plan.manifest
        service = service_fact(ns, next(s for s in manifest.services
                                        if s.name == self.plan.ref.service))
        changes: list[Change] = []
        for volume in self.record.volumes:
            evidence = volume.evidence
            assert evidence is not None
            current = state.volumes[volume.name]
            changes.append(PutVolume(volume=current.model_copy(update={
                "owner": target, "dataset": volume.target_dataset, "size": volume.size})))
            changes.append(RecordTransfer(evidence=TransferEvidence(
                namespace=ns, volume=volume.name, source=self.plan.source, target=target,
                snapshot=evidence["snapshot"], guid=int(evidence["source_guid"]),
                received_guid=int(evidence["guid"]), base_guid=int(evidence["base_guid"]),
                bytes=int(evidence["size"]), checksum=str(evidence["checksum"]),
                acknowledged_at=evidence["acknowledged_at"])))
        changes.append(PutService(service=service))
        changes.append(SetRoute(route=Route(namespace=ns, service=service.name, machine=target)))
        return changes

    def _service_containers(self, client: AgentClient) -> list[dict[str, Any]]:
        listed = client.call("container.list",
                             {"labels": service_labels(self.plan.ref.namespace,
                                                       self.plan.ref.service)})
        return [c for c in listed if c["labels"].get(LABEL_DEPLOY) != self.deploy_id]

