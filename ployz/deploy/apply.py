"""Running a deploy: plan, apply through the agents, commit, clean up (ployz's deploy phases).

1. plan: :func:`~ployz.deploy.plan.make_plan` and a probe of the participants (is each image on
   its machine?). Nothing is changed; a refusal here leaves no trace.
2. apply, under the namespace deploy lock, as a :class:`~ployz.deploy.run.DeployRun` (which
   first settles any deploy or migration of the namespace a killed run left): create the new
   volumes (dataset with its quota, mounted) through their owner's agent, then create and start
   the containers and wait until they are ready. A changed service that mounts volumes has its
   old container stopped first, so a volume never has two writers. Each of these is written
   into the deploy record before it is made (:mod:`.plain`).
3. commit: volumes, services and routes in one atomic commit carrying the lock's fencing token.
   The point of no return.
4. cleanup: remove the containers the commit replaced. A failure here does not undo the commit;
   the deploy becomes ``failed-after-commit`` and the next deploy of the namespace finishes it.

Any failure before the commit undoes what this deploy created, from its record, in reverse order
(containers removed, stopped ones restarted, datasets destroyed) and marks the deploy ``failed``;
the error says what was undone and what could not be. A ``ployzctl deploy`` killed at any point
leaves a record that the next run of the namespace settles the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ployz.agent.api import str_prop
from ployz.control.models import Change, PutService, PutVolume, RemoveService, Route, SetRoute
from ployz.control.plane import ControlPlane
from ployz.deploy.agents import AgentLookup, machine_map
from ployz.deploy.errors import (
    DatasetInTheWay,
    ImageNotOnMachine,
    InsufficientCapacity,
    MoveNeedsTransfer,
)
from ployz.deploy.events import Emit, ignore, step
from ployz.deploy.kinds import KINDS
from ployz.deploy.manifest import Manifest
from ployz.deploy.plain import PLAIN_DEPLOY, DeployRecord, Placed
from ployz.deploy.plan import DeployPlan, ServiceAction, VolumeAction, make_plan
from ployz.deploy.run import (
    DeployRun,
    namespace_lock,
    new_deploy_id,
    settle_unfinished,
    unfinished,
)
from ployz.deploy.specs import (
    container_spec,
    dataset_name,
    service_address,
    service_fact,
    volume_fact,
    volume_mountpoint,
)
from ployz.deploy.undo import other_deploys

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DeployResult:
    plan: DeployPlan
    deploy_id: str | None = None
    commit_seq: int | None = None
    """None when the plan changed nothing (no deploy was recorded)."""

    def to_json(self) -> dict[str, Any]:
        return {"deploy_id": self.deploy_id, "commit": self.commit_seq,
                "plan": self.plan.to_json()}


def plan_deploy(manifest: Manifest, cp: ControlPlane) -> DeployPlan:
    """The plan a plain deploy can execute: moving volume data is migrate's job."""
    plan = make_plan(manifest, cp)
    if plan.moves:
        raise MoveNeedsTransfer([action.name for action in plan.moves])
    return plan


def deploy(
    cp: ControlPlane,
    manifest: Manifest,
    agents: AgentLookup,
    *,
    holder: str,
    emit: Emit = ignore,
) -> DeployResult:
    """Deploy ``manifest``; raises a :class:`~ployz.deploy.errors.DeployError` (or a control
    plane or agent error before anything changed) and otherwise returns the commit."""
    namespace = manifest.namespace
    plan = plan_deploy(manifest, cp)
    # An earlier run left unfinished is settled even by a deploy that changes nothing.
    if not plan.changes_anything and not unfinished(cp, namespace):
        emit(step("nothing to change"))
        return DeployResult(plan)
    _probe_images(plan, cp, agents)
    with namespace_lock(cp, namespace, holder, emit) as keeper:
        settle_unfinished(cp, agents, namespace, KINDS, emit)
        # Planned again under the lock: another deploy may have committed since the first plan.
        plan = plan_deploy(manifest, cp)
        if not plan.changes_anything:
            emit(step("nothing to change: another deploy already did it"))
            return DeployResult(plan)
        record = DeployRecord(deploy_id=new_deploy_id(plan.digest), namespace=namespace,
                              replaced=[Placed(machine=a.previous_machine, name=a.name)
                                        for a in plan.services if a.kind in ("replace", "remove")
                                        and a.previous_machine is not None])
        run = DeployRun(cp, agents, PLAIN_DEPLOY, record, keeper, emit)
        seq = run.execute(_Apply(manifest, plan))
    return DeployResult(plan, record.deploy_id, seq)


def _probe_images(plan: DeployPlan, cp: ControlPlane, agents: AgentLookup) -> None:
    machines = machine_map(cp)
    for action in plan.services:
        if (action.kind in ("start", "replace") and action.machine and action.image
                and not agents.agent(machines[action.machine]).containers.has_image(
                    action.image)):
            raise ImageNotOnMachine(action.name, action.image, action.machine)


class _Apply:
    """The apply phase of one deploy: what it creates, recorded before it is made."""

    def __init__(self, manifest: Manifest, plan: DeployPlan) -> None:
        self.manifest = manifest
        self.plan = plan
        self.namespace = manifest.namespace

    def __call__(self, run: DeployRun[DeployRecord]) -> list[Change]:
        self.run = run
        run.step("apply", phase="apply")
        created = self._create_volumes([a for a in self.plan.volumes if a.kind == "create"])
        datasets = {a.name: a.dataset for a in self.plan.volumes if a.dataset} | created
        changes: list[Change] = [
            PutVolume(volume=volume_fact(self.namespace, self.manifest.volume(name), dataset))
            for name, dataset in created.items()
        ]
        for action in self.plan.services:
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
            agent = self.run.agent_of(machine)
            capacity = agent.zfs.capacity()
            needed = sum(action.quota or 0 for action in group)
            if needed > capacity.free:  # the heartbeat the plan used may be old
                raise InsufficientCapacity(machine, needed, capacity.free,
                                           [a.name for a in group])
            pool_mountpoint = str_prop(agent.zfs.get(capacity.pool, ["mountpoint"]),
                                       "mountpoint")
            for action in group:
                dataset = dataset_name(capacity.pool, self.namespace, action.name)
                if agent.zfs.exists(dataset):
                    raise DatasetInTheWay(machine, dataset)
                self.run.record.datasets.append(Placed(machine=machine, name=dataset))
                self.run.save()
                agent.zfs.create(dataset, quota=action.quota,
                                 mountpoint=volume_mountpoint(pool_mountpoint, dataset))
                self.run.emit(step(f"created volume {action.name} as {dataset} on {machine}"))
                created[action.name] = dataset
        return created

    def _start_service(self, action: ServiceAction, datasets: dict[str, str]) -> list[Change]:
        assert action.machine is not None
        address = service_address(self.run.cp, self.namespace, action.name)
        service = service_fact(self.namespace, next(
            s for s in self.manifest.services if s.name == action.name), address)
        agent = self.run.agent_of(action.machine)
        mounts = service.config.get("mounts", {})
        mountpoints = {}
        for volume in mounts:
            dataset = datasets[volume]
            mountpoints[volume] = str_prop(agent.zfs.get(dataset, ["mountpoint"]), "mountpoint")
            # Idempotent: remounts a kept volume whose machine rebooted.
            agent.zfs.mount(dataset, mountpoints[volume])
        if action.previous_machine is not None and (
                mounts or action.previous_machine == action.machine):
            self._stop_old_containers(action)
        read_only = {v: self.manifest.volume(v).mode == "ro" for v in mounts}
        spec = container_spec(service, self.run.deploy_id, mountpoints, read_only, address)
        name = spec.container_name
        self.run.record.containers.append(Placed(machine=action.machine, name=name))
        self.run.save()
        agent.containers.create(spec)
        agent.containers.start(name)
        agent.containers.wait_ready(name, timeout_s=READY_TIMEOUT_S)
        self.run.emit(step(f"started {self.namespace}/{action.name} on {action.machine} "
                           f"({name})"))
        route = Route(namespace=self.namespace, service=action.name, machine=action.machine)
        return [PutService(service=service), SetRoute(route=route)]

    def _stop_old_containers(self, action: ServiceAction) -> None:
        """A service's volumes get one writer, and its address one holder on a machine: its
        old containers stop before the new starts (and restart if the deploy fails before its
        commit)."""
        assert action.previous_machine is not None
        agent = self.run.agent_of(action.previous_machine)
        for old in other_deploys(agent, self.namespace, action.name, self.run.deploy_id):
            if old.state != "running":
                continue
            self.run.record.stopped.append(Placed(machine=action.previous_machine,
                                                  name=old.name))
            self.run.save()
            agent.containers.stop(old.name)
            self.run.emit(step(f"stopped {old.name} on {action.previous_machine}"))
