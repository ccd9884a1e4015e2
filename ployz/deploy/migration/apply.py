"""``migrate apply``: move a service and its volumes to another machine as one deploy.

Phases (ployz's plan / apply / commit / cleanup, with the apply phase split into the steps that
move data):

1. lock: the namespace deploy lock, held under a stable holder per service and renewed by a
   :class:`~ployz.control.LeaseKeeper` while the data moves;
2. pre-copy, with the service running: a snapshot and a full send of every volume; the
   received datasets mounted on the target and the container created (not started) there,
   with the same image and configuration: creation costs seconds that need not fall in the
   cutover window, and later incrementals receive into a mounted, untouched dataset like any
   other; then incremental rounds of all volumes, each sending what was written during the one
   before, until the final send would fit the downtime budget (``max_downtime_s``) with the
   stop and start around it and another round is no longer worth it, as measured
   (:func:`~ployz.deploy.migration.estimate.next_round`); a service whose deltas stop shrinking
   before that cannot converge, and the run aborts before its fence
   (:class:`~.errors.PrecopyWontConverge`). Each snapshot is held so nothing can destroy the
   incremental base;
3. fence: the source container stops (no more writes), the final snapshots are taken;
4. final-send: the last incremental, small by construction;
5. start: the prepared container starts on the target and is waited for (healthy, if it has a
   check);
6. commit: volume owner and dataset, placement, route and the receiver's evidence, atomically
   and only while the lock's fencing token is current. The point of no return;
7. cleanup: old container removed, holds released, migration snapshots destroyed, the source
   dataset destroyed (kept with ``keep_source``), lock released.

It runs as a :class:`~ployz.deploy.run.DeployRun` of the ``migrate`` kind: every mutation is
recorded in the deploy record first (:mod:`.record`); a failure before the commit rolls back
(:data:`.settle.MIGRATION`) and raises :class:`MigrationAborted`; after it, a cleanup failure
marks the deploy failed-after-commit. ``apply`` run again first settles any run of the namespace
left unfinished by a killed one: it rolls back one that did not commit and finishes the cleanup
of one that did. Ownership changes only in the commit, so a volume is always owned by exactly
one machine.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from ployz.agent.api import Agent
from ployz.control.models import (
    Change,
    PutService,
    PutVolume,
    RecordTransfer,
    Route,
    SetRoute,
    TransferEvidence,
    utcnow,
)
from ployz.control.plane import ControlPlane
from ployz.deploy.agents import AgentLookup
from ployz.deploy.apply import READY_TIMEOUT_S
from ployz.deploy.events import (
    Done,
    Emit,
    Event,
    Phase,
    Started,
    TransferDone,
    TransferInterrupted,
    TransferProgress,
    TransferStarted,
    ignore,
    step,
)
from ployz.deploy.kinds import KINDS
from ployz.deploy.migration.actual import Actual
from ployz.deploy.migration.errors import PrecopyWontConverge
from ployz.deploy.migration.estimate import costs_of, downtime_budget, held_to, next_round
from ployz.deploy.migration.plan import MigrationPlan, plan_migration
from ployz.deploy.migration.record import (
    Evidence,
    MigrationRecord,
    VolumeRecord,
    snapshot_name,
)
from ployz.deploy.migration.ref import ServiceRef
from ployz.deploy.migration.saved_plan import PlanFile
from ployz.deploy.migration.settle import MIGRATION
from ployz.deploy.migration.snapshot_send import SnapshotSent, send_snapshot
from ployz.deploy.migration.target import prepare_container
from ployz.deploy.run import (
    DeployRun,
    Settled,
    namespace_lock,
    new_deploy_id,
    settle_unfinished,
    unfinished,
)
from ployz.deploy.specs import service_address, service_fact
from ployz.deploy.undo import other_deploys


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
    routes: dict[str, Any] | None = None
    """Which live machines confirmed the commit's routing (None: a run that only finished a
    cleanup did not wait)."""
    estimate: dict[str, Any] | None = None
    """What the plan predicted (None: a run that only finished a cleanup)."""
    actual: dict[str, Any] | None = None
    """The same figures as this run measured them."""

    def to_json(self) -> dict[str, Any]:
        return {"deploy_id": self.deploy_id, "commit": self.commit_seq, "source": self.source,
                "target": self.target, "cutover_s": self.cutover, "seconds": self.seconds,
                "routes": self.routes, "estimate": self.estimate, "actual": self.actual}


def migrate(
    cp: ControlPlane,
    agents: AgentLookup,
    ref: ServiceRef,
    to_machine: str,
    *,
    keep_source: bool = False,
    max_downtime_s: float | None = None,
    expected: PlanFile | None = None,
    bwlimit: float = 0.0,
    limit_group: str | None = None,
    emit: Emit = ignore,
) -> MigrationResult:
    """Moves ``ref`` to ``to_machine``; see the module docstring for the phases and errors.
    ``max_downtime_s``: the downtime budget pre-copy converges to (by default what the
    service's stop, start and readiness measured, plus a margin for the final send);
    ``expected``: a saved plan the move must still match (:class:`~.saved_plan.PlanOutdated`
    otherwise, before anything changes); ``bwlimit``: bytes per second all its sends share
    (0: unlimited), with the sends of other migrations of the same ``limit_group`` (a drain's,
    whose sends all leave from the drained machine); by default its own."""
    if expected is not None:
        expected.check_placement(cp.get_service(ref.namespace, ref.service).machine)
    if not unfinished(cp, ref.namespace):
        # Refusals before anything is written, not even the lock.
        _checked(plan_migration(cp, agents, ref, to_machine, max_downtime_s,
                                sample_writes=False), expected)
    emit(Phase(phase="lock"))
    started = time.monotonic()
    moved: tuple[DeployRun[MigrationRecord], _Phases] | None = None
    with namespace_lock(cp, ref.namespace, ref.holder, emit) as keeper:
        settled = settle_unfinished(cp, agents, ref.namespace, KINDS, emit)
        result = _already_moved(settled, ref, to_machine)
        if result is None:
            plan = _checked(plan_migration(cp, agents, ref, to_machine, max_downtime_s,
                                           bwlimit=bwlimit), expected)
            run = DeployRun(cp, agents, MIGRATION, _record(plan, keep_source), keeper, emit)
            phases = _Phases(cp, plan, run, bwlimit, max_downtime_s,
                             limit_group or run.deploy_id)
            seq = run.execute(phases, started=Started(deploy_id=run.deploy_id,
                                                      plan=plan.to_json()))
            result = MigrationResult(run.deploy_id, seq, plan.source, plan.target,
                                     phases.cutover,
                                     routes=asdict(run.routes) if run.routes else None,
                                     estimate=plan.prediction.estimate.to_json())
            moved = run, phases
    result.seconds = round(time.monotonic() - started, 3)
    if moved is not None:
        _record_actual(cp, ref, result, *moved)
    emit(Done(**result.to_json()))
    return result


def _checked(plan: MigrationPlan, expected: PlanFile | None) -> MigrationPlan:
    """``plan`` if it can run: a saved plan it was given still holds, the target has room."""
    if expected is not None:
        expected.check(plan)
    plan.check_room()
    return plan


def _record_actual(cp: ControlPlane, ref: ServiceRef, result: MigrationResult,
                   run: DeployRun[MigrationRecord], phases: _Phases) -> None:
    """The figures this run measured, beside its estimate: in its result and its deploy
    record; and the costs the next estimates start from."""
    assert result.seconds is not None
    result.actual = phases.actual.measured(result.seconds, phases.cutover).to_json()
    phases.record_final_send()
    cp.record_cutover(phases.actual.costs(ref, result.seconds, phases.cutover))
    run.record.estimate, run.record.actual = result.estimate, result.actual
    run.save()


def _already_moved(settled: list[Settled], ref: ServiceRef,
                   to_machine: str) -> MigrationResult | None:
    """The settled migration that had already moved ``ref`` to ``to_machine``, if any: nothing
    is left to do then."""
    for done in settled:
        record = done.record
        if (isinstance(record, MigrationRecord) and done.commit_seq is not None
                and (record.target, record.service) == (to_machine, ref.service)):
            return MigrationResult(record.deploy_id, done.commit_seq, record.source,
                                   record.target)
    return None


def _record(plan: MigrationPlan, keep_source: bool) -> MigrationRecord:
    return MigrationRecord(
        deploy_id=new_deploy_id(plan.digest), namespace=plan.ref.namespace,
        service=plan.ref.service, source=plan.source, target=plan.target, digest=plan.digest,
        keep_source=keep_source,
        volumes=[VolumeRecord(name=v.name, source_dataset=v.source_dataset,
                              target_dataset=v.target_dataset, size=v.size)
                 for v in plan.volumes])


class _Phases:
    """A migration's steps before its commit; each mutation is recorded first."""

    def __init__(self, cp: ControlPlane, plan: MigrationPlan,
                 run: DeployRun[MigrationRecord], bwlimit: float,
                 max_downtime_s: float | None, limit_group: str) -> None:
        self.cp = cp
        self.plan = plan
        self.run = run
        self.record = run.record
        self.source: Agent = run.agent_of(plan.source)
        self.target: Agent = run.agent_of(plan.target)
        self.cutover: dict[str, float] = {}
        self.container = ""
        """The target container, created after pre-copy's full sends."""
        self.address = service_address(cp, plan.ref.namespace, plan.ref.service)
        """The service's stable address: the target container takes it over."""
        self.actual = Actual(plan.prediction.estimate.initial_bytes)
        """What this run measures of its estimate's figures."""
        self.bwlimit = bwlimit
        """Bytes per second all of this run's sends share (0: unlimited)."""
        self.limit_group = limit_group
        """The source agent keeps the sends of this group to ``bwlimit`` together: a send
        that ends leaves its share to the others at once."""
        self.max_downtime_s = max_downtime_s
        """The operator's budget; None: the default, of the figures each verdict reads."""
        self._shared = threading.Lock()
        self.final_sent: tuple[int, float] | None = None
        """The final send's bytes and seconds, recorded once the service answers again."""
        self.quotas = {name: v.quota for name, v in cp.namespace(plan.ref.namespace)
                       .volumes.items()}
        """Set on each target dataset by its full receive, as a deploy sets them at creation."""

    def __call__(self, run: DeployRun[MigrationRecord]) -> list[Change]:
        run.save(phase="apply")
        self._pre_copy()
        fenced = time.monotonic()
        self._fence()
        self._final_send()
        self._start()
        self.cutover["total"] = round(time.monotonic() - fenced, 3)
        return self._changes()

    # --- pre-copy, fence, final send ---------------------------------------------------------

    def _pre_copy(self) -> None:
        """The full sends, the target container's preparation, then rounds of all volumes
        until :func:`next_round` fences. The container is created right after the full sends,
        not after the last round: its creation takes seconds (tens under a drain's load), and
        what the service wrote meanwhile then went to the final send, while the service was
        down; here the next round's verdict counts it and a round moves it."""
        self.run.step("pre-copy")
        if not self.record.volumes:
            self._prepare()
            return
        round_ = 1
        round_started = self._send_round(round_)
        self._prepare()
        previous: int | None = None
        while True:
            costs = costs_of(self.cp, self.plan.ref.namespace, self.plan.ref.service)
            delta = self.source.zfs.written([v.source_dataset for v in self.record.volumes])
            write_rate = delta / max(time.monotonic() - round_started, 1e-3)
            self.actual.wrote(write_rate)
            link = held_to(self.cp.link_rate(self.plan.source, self.plan.target),
                           self.bwlimit)
            if link is None or link.bytes_per_s is None:
                return  # only small sends so far: nothing left worth a round
            budget = downtime_budget(self.max_downtime_s, costs, link)
            verdict = next_round(link, costs, write_rate, delta, previous, round_, budget)
            if verdict == "fence":
                return
            if verdict == "cannot converge":
                raise PrecopyWontConverge(budget, write_rate, link.bytes_per_s,
                                          delta, round_)
            self.run.keeper.check()
            previous, round_ = delta, round_ + 1
            round_started = self._send_round(round_)

    def _send_round(self, round_: int) -> float:
        """One pre-copy round of every volume: its snapshots, taken at once, then its sends;
        returns when the snapshots were taken (what the next delta was written since)."""
        snapshots = [f"{v.source_dataset}@{snapshot_name(self.plan.digest, v.name, round_)}"
                     for v in self.record.volumes]
        self._note_round(snapshots, round_)
        self.run.save()
        self._snapshot(snapshots)
        taken = time.monotonic()
        self._send_all(snapshots, "full" if round_ == 1 else "incremental", round_)
        return taken

    def _send_all(self, snapshots: list[str], kind: str, round_: int) -> list[SnapshotSent]:
        """Sends one snapshot of each volume, all at once (each on agent connections of its
        own, sharing the bandwidth limit); returns once every send ended, raising the first
        failure then (a rollback must not race a send still running). The round is measured
        as one send of all its bytes in its wall time: concurrent sends share the link, so each
        alone would measure a fraction of it. A pre-copy round's measurement is recorded at
        once (the next round's verdict reads it); the final send's waits for
        :meth:`record_final_send`, outside the window."""
        started = time.monotonic()
        sends = self._send_each(snapshots, kind, round_)
        seconds = time.monotonic() - started
        size = sum(sent.received.bytes for sent in sends)
        if sends:
            self.actual.sent(kind, size, seconds)
            if kind == "final":
                self.final_sent = (size, seconds)
            else:
                self.cp.record_send(self.plan.source, self.plan.target, size, seconds,
                                    self._probe_for(kind))
        return sends

    def record_final_send(self) -> None:
        """Folds the final send into the link's model, once the service answers again."""
        if self.final_sent is not None:
            self.cp.record_send(self.plan.source, self.plan.target, *self.final_sent)

    def _probe_for(self, kind: str) -> float | None:
        """The plan's probe of the link, beside the full send that followed it: what the
        next probe's rate is scaled by. Not beside an incremental round (its time is mostly
        the fixed cost) nor a send held to ``--bwlimit`` (the limit, not the link, set its
        pace)."""
        if kind != "full" or self.bwlimit:
            return None
        return self.plan.prediction.probe_bytes_per_s

    def _send_each(self, snapshots: list[str], kind: str, round_: int) -> list[SnapshotSent]:
        volumes = self.record.volumes
        if len(volumes) <= 1:
            return [self._send(self.source, self.target, volume, snapshot, kind, round_)
                    for volume, snapshot in zip(volumes, snapshots, strict=True)]

        def one(volume: VolumeRecord, snapshot: str) -> SnapshotSent:
            source, target = self.source.fork(), self.target.fork()
            try:
                return self._send(source, target, volume, snapshot, kind, round_)
            finally:
                source.close()
                target.close()

        with ThreadPoolExecutor(len(volumes), "ployz-send") as pool:
            futures = [pool.submit(one, v, s) for v, s in zip(volumes, snapshots, strict=True)]
            wait(futures)
        return [future.result() for future in futures]

    def _note_round(self, snapshots: list[str], round_: int) -> None:
        """Notes in the record (saved by the caller, once for the whole round, before anything
        of it happens) the round's snapshots, one of each volume, and its transfers: what a
        rollback releases, destroys and cancels. Each is checked for before it is undone, so
        one noted and never made costs nothing."""
        for v, snapshot in zip(self.record.volumes, snapshots, strict=True):
            v.snapshots.append(snapshot)
            v.held.append(snapshot)
            self.record.transfers.append(self._transfer_id(v, round_))

    def _transfer_id(self, volume: VolumeRecord, round_: int) -> str:
        return f"{self.run.deploy_id}-{volume.name}-{round_}"

    def _snapshot(self, snapshots: list[str]) -> None:
        """Takes ``snapshots`` (one of each volume, noted in the record) at once and holds
        them."""
        self.source.zfs.snapshot(snapshots)
        self.source.zfs.hold(dict.fromkeys(snapshots, self.record.hold_tag))

    def _send(self, source: Agent, target: Agent, volume: VolumeRecord, snapshot: str,
              kind: str, round_: int) -> SnapshotSent:
        """One volume's send; the record, the events and the measurements are shared with the
        other volumes' sends, which may run at the same time (under ``self._shared``). What it
        changes in the record (the snapshot sent, the base released) is saved with the next
        save: a rollback needs neither (it releases only holds still there), and a save per
        send of four volumes is four control-plane writes in a row inside the window."""
        base = volume.sent[-1] if volume.sent else None
        transfer_id = self._transfer_id(volume, round_)
        estimate = source.zfs.send_space(snapshot, base)
        self._emit(TransferStarted(volume=volume.name, round=round_, kind=kind,
                                   snapshot=snapshot, estimate=estimate))
        quota = self.quotas.get(volume.name)
        sent = send_snapshot(
            source, target, self.run.agents.key, transfer_id=transfer_id,
            snapshot=snapshot, base=base, target_dataset=volume.target_dataset, total=estimate,
            props={"quota": quota} if base is None and quota else None,
            bwlimit=self.bwlimit, limit_group=self.limit_group,
            on_progress=lambda p: self._emit(TransferProgress(
                volume=volume.name, round=round_, kind=kind, bytes=p.bytes, total=p.total,
                rate=p.rate, eta_s=p.eta_s)),
            on_interruption=lambda reason, sent: self._emit(TransferInterrupted(
                volume=volume.name, round=round_, kind=kind, reason=reason, sent_bytes=sent)))
        if base is not None:
            # The new snapshot is the incremental base now; the old one need not be kept.
            source.zfs.release({base: [self.record.hold_tag]})
        received = sent.received
        with self._shared:
            volume.sent.append(snapshot)
            if base is not None:
                volume.held.remove(base)
        self._emit(TransferDone(volume=volume.name, round=round_, kind=kind,
                                bytes=received.bytes, wire_bytes=received.wire_bytes,
                                seconds=received.seconds, resumes=received.resumes,
                                codec=received.codec, resumed_bytes=received.resumed_bytes))
        return sent

    def _emit(self, event: Event) -> None:
        with self._shared:  # one event at a time, whichever send it is of
            self.run.emit(event)

    def _fence(self) -> None:
        """Stops the service's writers and snapshots its volumes. What it stops, the final
        snapshots and their transfers are recorded in one save with the step (each save is a
        control-plane write inside the window)."""
        started = time.monotonic()
        running = [c.name for c in other_deploys(self.source, self.plan.ref.namespace,
                                                 self.plan.ref.service, self.run.deploy_id)
                   if c.state == "running"]
        self.record.stopped = running
        snapshots = [f"{v.source_dataset}@{snapshot_name(self.plan.digest, v.name)}"
                     for v in self.record.volumes]
        self._note_round(snapshots, self._final_round())
        self.run.step("fence")
        for name in running:
            self.source.containers.stop(name)
            self.run.emit(step(f"stopped {name} on {self.plan.source}"))
        self.cutover["stop"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        if snapshots:
            self._snapshot(snapshots)
        self.cutover["final_snapshot"] = round(time.monotonic() - started, 3)

    def _final_round(self) -> int:
        """The final send's round: the one after pre-copy's (its snapshots are the last)."""
        volumes = self.record.volumes
        return len(volumes[0].snapshots) + 1 if volumes else 0

    def _final_send(self) -> None:
        self.run.step("final-send")
        started = time.monotonic()
        volumes = self.record.volumes
        sends = self._send_all([v.snapshots[-1] for v in volumes], "final",
                               len(volumes[0].snapshots) if volumes else 0)
        for volume, sent in zip(volumes, sends, strict=True):
            assert sent.fromguid is not None  # the final send is incremental
            volume.evidence = Evidence(committed=sent.received.committed,
                                       source_guid=sent.toguid, base_guid=sent.fromguid,
                                       acknowledged_at=utcnow().isoformat())
        # Saved with the start's step: the commit takes the evidence from this run, and a
        # rollback does not read it.
        self.cutover["final_send"] = round(time.monotonic() - started, 3)

    # --- start on the target, the commit's changes -------------------------------------------

    def _prepare(self) -> None:
        """Mounts the received datasets and creates the container on the target, unstarted."""
        self.container = prepare_container(
            self.target, self.plan.manifest, self.plan.ref.service, self.run.deploy_id,
            self.plan.room.pool, {v.name: v.target_dataset for v in self.record.volumes},
            self.address)
        self.run.emit(step(f"created {self.container} on {self.plan.target} (starts after "
                           "the fence)"))

    def _start(self) -> None:
        self.run.step("start")
        started = time.monotonic()
        self.target.containers.start(self.container)
        self.cutover["start"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        self.target.containers.wait_ready(self.container, timeout_s=READY_TIMEOUT_S)
        self.cutover["ready"] = round(time.monotonic() - started, 3)
        self.run.emit(step(f"started {self.container} on {self.plan.target}"))

    def _changes(self) -> list[Change]:
        ns, target = self.plan.ref.namespace, self.plan.target
        state = self.cp.namespace(ns)
        manifest = self.plan.manifest
        service = service_fact(ns, next(s for s in manifest.services
                                        if s.name == self.plan.ref.service), self.address)
        changes: list[Change] = []
        for volume in self.record.volumes:
            evidence = volume.evidence
            assert evidence is not None and evidence.committed.snapshot is not None
            assert evidence.committed.guid is not None
            current = state.volumes[volume.name]
            changes.append(PutVolume(volume=current.model_copy(update={
                "owner": target, "dataset": volume.target_dataset, "size": volume.size})))
            changes.append(RecordTransfer(evidence=TransferEvidence(
                namespace=ns, volume=volume.name, source=self.plan.source, target=target,
                snapshot=evidence.committed.snapshot, guid=evidence.source_guid,
                received_guid=evidence.committed.guid, base_guid=evidence.base_guid,
                bytes=evidence.committed.size, checksum=evidence.committed.checksum,
                acknowledged_at=evidence.acknowledged_at)))
        changes.append(PutService(service=service))
        changes.append(SetRoute(route=Route(namespace=ns, service=service.name, machine=target)))
        return changes
