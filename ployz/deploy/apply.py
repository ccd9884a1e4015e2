"""Running a deploy: plan, apply through the agents, commit, clean up (ployz's deploy phases).

1. plan: :func:`~ployz.deploy.plan.make_plan` and a probe of the participants (is each image on
   its machine?). Nothing is changed; a refusal here leaves no trace.
2. apply, under the namespace deploy lock: create the new volumes (dataset with its quota,
   mounted) through their owner's agent, then create and start the containers and wait until
   they are ready. A changed service that mounts volumes has its old container stopped first, so
   a volume never has two writers.
3. commit: volumes, services and routes in one atomic commit carrying the lock's fencing token.
   The point of no return.
4. cleanup: remove the containers the commit replaced. A failure here does not undo the commit;
   the deploy becomes ``failed-after-commit``.

Any failure before the commit undoes what this deploy created, in reverse order (containers
removed, stopped ones restarted, datasets destroyed) and marks the deploy ``failed``; the error
says what was undone and what could not be.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ployz.agent.client import AgentClient
from ployz.agent.errors import AgentError
from ployz.control.errors import ControlPlaneError, StaleFencingToken
from ployz.control.leases import deploy_lock_name
from ployz.control.models import (
    Change,
    DeployPhase,
    Lease,
    Machine,
    PutService,
    PutVolume,
    RemoveService,
    Route,
    SetRoute,
)
from ployz.control.plane import ControlPlane
from ployz.deploy.agents import AgentDirectory
from ployz.deploy.errors import (
    DatasetInTheWay,
    DeployFailed,
    DeployFailedAfterCommit,
    ImageNotOnMachine,
    InsufficientCapacity,
    MoveNeedsTransfer,
)
from ployz.deploy.manifest import Manifest
from ployz.deploy.plan import DeployPlan, ServiceAction, VolumeAction, make_plan
from ployz.deploy.specs import (
    container_spec,
    dataset_name,
    service_fact,
    volume_fact,
    volume_mountpoint,
)
from ployz.runtime.model import LABEL_DEPLOY, service_labels

DEPLOY_LOCK_TTL_S = 1800.0
"""ployz's 30 minutes: far longer than a plain deploy (which therefore does not renew it)."""
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DeployResult:
    plan: DeployPlan
    deploy_id: str | None = None
    commit_seq: int | None = None
    """None when the plan changed nothing (no deploy was recorded)."""

    def to_json(self) -> dict[str, Any]:
        return {"deploy_id": self.deploy_id, "commit": self.commit_seq,
                "plan": self.plan.to_json()}


@dataclass
class Rollback:
    """Undo steps of what a deploy did, run newest first if it fails before its commit."""

    steps: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def add(self, description: str, undo: Callable[[], object]) -> None:
        self.steps.append((description, undo))

    def run(self) -> tuple[list[str], list[str]]:
        """``(undone, left)``: descriptions of the steps that worked and of those that failed."""
        undone: list[str] = []
        left: list[str] = []
        for description, undo in reversed(self.steps):
            try:
                undo()
                undone.append(description)
            except (AgentError, OSError) as exc:
                left.append(f"{description} failed: {exc}")
        self.steps.clear()
        return undone, left


def plan_deploy(manifest: Manifest, cp: ControlPlane) -> DeployPlan:
    """The plan a plain deploy can execute: moving volume data is migrate's job."""
    plan = make_plan(manifest, cp)
    if plan.moves:
        raise MoveNeedsTransfer([action.name for action in plan.moves])
    return plan


def deploy(
    cp: ControlPlane,
    manifest: Manifest,
    agents: AgentDirectory,
    *,
    holder: str,
    progress: Progress = lambda message: None,
) -> DeployResult:
    """Deploy ``manifest``; raises a :class:`~ployz.deploy.errors.DeployError` (or a control
    plane or agent error before anything changed) and otherwise returns the commit."""
    plan = plan_deploy(manifest, cp)
    if not plan.changes_anything:
        progress("nothing to change")
        return DeployResult(plan)
    _probe_images(plan, _machines(cp), agents)
    lock_name = deploy_lock_name(manifest.namespace)
    lease = cp.acquire(lock_name, holder, DEPLOY_LOCK_TTL_S)
    progress(f"acquired the deploy lock of {manifest.namespace} (token {lease.token})")
    try:
        return _DeployRun(cp, manifest, agents, lease, progress).run()
    finally:
        with contextlib.suppress(StaleFencingToken):
            cp.release(lock_name, lease.token)


def _machines(cp: ControlPlane) -> dict[str, Machine]:
    return {m.id: m for m in cp.list_machines()}


def _probe_images(plan: DeployPlan, machines: dict[str, Machine], agents: AgentDirectory) -> None:
    for action in plan.services:
        if action.kind in ("start", "replace") and action.machine and action.image:
            client = agents.client(machines[action.machine])
            if not client.call("container.has_image", {"image": action.image}):
                raise ImageNotOnMachine(action.name, action.image, action.machine)


class _DeployRun:
    """One deploy under the lock: its record, its rollback, its phases."""

    def __init__(
        self,
        cp: ControlPlane,
        manifest: Manifest,
        agents: AgentDirectory,
        lease: Lease,
        progress: Progress,
    ) -> None:
        self.cp = cp
        self.manifest = manifest
        self.namespace = manifest.namespace
        self.agents = agents
        self.lease = lease
        self.progress = progress
        self.rollback = Rollback()
        self.machines: dict[str, Machine] = {}
        self.phase: DeployPhase = "plan"
        self.deploy_id = ""

    def run(self) -> DeployResult:
        # Planned again under the lock: another deploy may have committed since the first plan.
        plan = plan_deploy(self.manifest, self.cp)
        if not plan.changes_anything:
            self.progress("nothing to change: another deploy already did it")
            return DeployResult(plan)
        self.machines = _machines(self.cp)
        self.deploy_id = f"{plan.digest}-{secrets.token_hex(4)}"
        self.cp.begin_deploy(self.namespace, "deploy", self.deploy_id)
        try:
            changes = self._apply(plan)
            self._enter("commit")
            seq = self.cp.commit(self.namespace, self.lease.token, changes,
                                 deploy_id=self.deploy_id).seq
        except (Exception, KeyboardInterrupt) as exc:
            if not self._committed():
                self._fail(exc)
            seq = self.cp.get_deploy(self.deploy_id).commit_seq or 0
        self.progress(f"committed deploy {self.deploy_id} as #{seq}")
        self._cleanup(plan, seq)
        return DeployResult(plan, self.deploy_id, seq)

    def _enter(self, phase: DeployPhase) -> None:
        self.phase = phase
        self.cp.update_deploy(self.deploy_id, phase=phase)

    def _client(self, machine_id: str) -> AgentClient:
        return self.agents.client(self.machines[machine_id])

    # --- apply ---------------------------------------------------------------------------------

    def _apply(self, plan: DeployPlan) -> list[Change]:
        self._enter("apply")
        created = self._create_volumes([a for a in plan.volumes if a.kind == "create"])
        datasets = {a.name: a.dataset for a in plan.volumes if a.dataset} | created
        changes: list[Change] = [
            PutVolume(volume=volume_fact(self.namespace, self.manifest.volume(name), dataset))
            for name, dataset in created.items()
        ]
        for action in plan.services:
            if action.kind in ("start", "replace"):
                changes += self._start_service(action, datasets)
            elif action.kind == "remove":
                changes.append(RemoveService(name=action.name))
        return changes

    def _create_volumes(self, actions: list[VolumeAction]) -> dict[str, str]:
        """Creates the new datasets; returns volume name -> dataset."""
        by_machine: dict[str, list[VolumeAction]] = {}
        for action in actions:
            by_machine.setdefault(action.machine, []).append(action)
        created: dict[str, str] = {}
        for machine, group in sorted(by_machine.items()):
            client = self._client(machine)
            capacity = client.call("zfs.capacity")
            needed = sum(action.quota or 0 for action in group)
            if needed > capacity["free"]:  # the heartbeat the plan used may be old
                raise InsufficientCapacity(machine, needed, capacity["free"],
                                           [a.name for a in group])
            pool = capacity["pool"]
            pool_mountpoint = client.call("zfs.get", {"name": pool, "props": ["mountpoint"]})
            for action in group:
                dataset = dataset_name(pool, self.namespace, action.name)
                if client.call("zfs.exists", {"name": dataset}):
                    raise DatasetInTheWay(machine, dataset)
                mountpoint = volume_mountpoint(pool_mountpoint["mountpoint"], dataset)
                client.call("zfs.create", {"dataset": dataset, "quota": action.quota,
                                           "mountpoint": mountpoint})
                self.rollback.add(f"destroyed dataset {dataset} on {machine}",
                                  partial(client.call, "zfs.destroy", {"dataset": dataset}))
                self.progress(f"created volume {action.name} as {dataset} on {machine}")
                created[action.name] = dataset
        return created

    def _start_service(self, action: ServiceAction, datasets: dict[str, str]) -> list[Change]:
        assert action.machine is not None
        service = service_fact(self.namespace, next(
            s for s in self.manifest.services if s.name == action.name))
        client = self._client(action.machine)
        mounts = service.config.get("mounts", {})
        mountpoints = {}
        for volume in mounts:
            dataset = datasets[volume]
            mountpoint = client.call("zfs.get", {"name": dataset, "props": ["mountpoint"]})
            mountpoints[volume] = mountpoint["mountpoint"]
            # Idempotent: remounts a kept volume whose machine rebooted.
            client.call("zfs.mount", {"dataset": dataset, "mountpoint": mountpoints[volume]})
        if mounts and action.previous_machine is not None:
            self._stop_old_containers(action)
        read_only = {v: self.manifest.volume(v).mode == "ro" for v in mounts}
        spec = container_spec(service, self.deploy_id, mountpoints, read_only)
        name = spec.container_name
        client.call("container.create", {"spec": spec.model_dump(mode="json")})
        self.rollback.add(f"removed container {name} on {action.machine}",
                          lambda: client.call("container.remove", {"name": name, "force": True}))
        client.call("container.start", {"name": name})
        client.call("container.wait_ready", {"name": name, "timeout_s": READY_TIMEOUT_S},
                    timeout_s=READY_TIMEOUT_S + 30)
        self.progress(f"started {self.namespace}/{action.name} on {action.machine} ({name})")
        route = Route(namespace=self.namespace, service=action.name, machine=action.machine)
        return [PutService(service=service), SetRoute(route=route)]

    def _stop_old_containers(self, action: ServiceAction) -> None:
        """A service's volumes get one writer: its old containers stop before the new starts
        (and restart if the deploy fails before its commit)."""
        assert action.previous_machine is not None
        client = self._client(action.previous_machine)
        for old in self._old_containers(client, action.name):
            if old["state"] != "running":
                continue
            client.call("container.stop", {"name": old["name"], "timeout_s": STOP_TIMEOUT_S},
                        timeout_s=STOP_TIMEOUT_S + 30)
            self.rollback.add(
                f"restarted container {old['name']} on {action.previous_machine}",
                partial(client.call, "container.start", {"name": old["name"]}),
            )
            self.progress(f"stopped {old['name']} on {action.previous_machine}")

    def _old_containers(self, client: AgentClient, service: str) -> list[dict[str, Any]]:
        listed = client.call("container.list", {"labels": service_labels(self.namespace, service)})
        return [c for c in listed if c["labels"].get(LABEL_DEPLOY) != self.deploy_id]

    # --- failure before the commit, cleanup after it -------------------------------------------

    def _committed(self) -> bool:
        """Whether the commit landed although its call failed (an acknowledgement lost)."""
        try:
            return self.cp.get_deploy(self.deploy_id).commit_seq is not None
        except ControlPlaneError:
            return False

    def _fail(self, exc: BaseException) -> None:
        undone, left = self.rollback.run()
        reason = f"lock-lost: {exc}" if isinstance(exc, StaleFencingToken) else str(exc)
        with contextlib.suppress(ControlPlaneError):
            self.cp.update_deploy(self.deploy_id, status="failed", reason=reason)
        raise DeployFailed(self.deploy_id, self.phase, exc, undone, left) from exc

    def _cleanup(self, plan: DeployPlan, seq: int) -> None:
        self._enter("cleanup")
        problems = []
        for action in plan.services:
            if action.kind not in ("replace", "remove") or action.previous_machine is None:
                continue
            try:
                self._remove_old_containers(action)
            except AgentError as exc:
                problems.append(f"old containers of {action.name} on {action.previous_machine}: "
                                f"{exc}")
        if problems:
            self.cp.update_deploy(self.deploy_id, status="failed-after-commit",
                                  reason="; ".join(problems))
            raise DeployFailedAfterCommit(self.deploy_id, seq, problems)
        self._enter("done")

    def _remove_old_containers(self, action: ServiceAction) -> None:
        assert action.previous_machine is not None
        client = self._client(action.previous_machine)
        for old in self._old_containers(client, action.name):
            client.call("container.remove", {"name": old["name"], "force": True})
            self.progress(f"removed {old['name']} on {action.previous_machine}")
