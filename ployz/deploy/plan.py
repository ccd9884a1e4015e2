"""The plan of a deploy: what a manifest changes on the cluster as the control plane sees it.

Pure: it reads the machines and the namespace's facts once and decides, without touching an agent
or writing anything. This is ployz's "plan" phase: every refusal that can be known from the facts
(unknown or draining machine, not enough pool space, a volume that would change machine without
saying how its data moves) happens here, before any mutation, with the manifest field to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ployz.control.models import Machine, NamespaceState, Service, Volume
from ployz.control.plane import ControlPlane
from ployz.deploy.errors import (
    GatewayHostClaimed,
    InsufficientCapacity,
    MachineDraining,
    MachineSilent,
    MoveSourceMismatch,
    NotADnsLabel,
    QuotaChangeUnsupported,
    UnknownPlacement,
    VolumeOwnerConflict,
)
from ployz.deploy.manifest import Manifest, ManifestVolume
from ployz.deploy.specs import service_fact
from ployz.net.names import is_dns_label

VolumeActionKind = Literal["create", "keep", "move"]
ServiceActionKind = Literal["start", "replace", "keep", "remove"]


@dataclass(frozen=True)
class VolumeAction:
    """``create`` a new dataset on ``machine``, ``keep`` an existing one as it is, or ``move``
    it from ``source`` to ``machine`` (only the migration workflow executes moves)."""

    kind: VolumeActionKind
    name: str
    machine: str
    quota: int | None
    source: str | None = None
    dataset: str | None = None
    """The existing dataset (keep, move); a created one is named once its pool is known."""


@dataclass(frozen=True)
class ServiceAction:
    """``start`` a new service, ``replace`` a changed one (``changes`` says what changed),
    ``keep`` an unchanged one, ``remove`` one the manifest no longer has."""

    kind: ServiceActionKind
    name: str
    machine: str | None
    previous_machine: str | None = None
    image: str | None = None
    changes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MachineCapacity:
    """Pool space a machine last reported against what the new volumes placed there reserve."""

    machine: str
    pool_free: int
    needed: int


@dataclass(frozen=True)
class DeployPlan:
    namespace: str
    digest: str
    volumes: tuple[VolumeAction, ...]
    services: tuple[ServiceAction, ...]
    capacity: tuple[MachineCapacity, ...]
    retained_volumes: tuple[str, ...] = field(default=())
    """Volumes the control plane has but the manifest does not: kept, never destroyed."""

    @property
    def changes_anything(self) -> bool:
        actions: tuple[VolumeAction | ServiceAction, ...] = (*self.volumes, *self.services)
        return any(a.kind != "keep" for a in actions)

    @property
    def moves(self) -> tuple[VolumeAction, ...]:
        return tuple(a for a in self.volumes if a.kind == "move")

    def service(self, name: str) -> ServiceAction:
        return next(a for a in self.services if a.name == name)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changes_anything": self.changes_anything}


def make_plan(manifest: Manifest, cp: ControlPlane) -> DeployPlan:
    """The plan of ``manifest`` against the control plane's current facts; a control plane
    without a cluster (``machine init`` makes it) has no service addresses to give:
    :class:`~ployz.control.NoCluster`."""
    cp.get_cluster()
    machines = {m.id: m for m in cp.list_machines()}
    claims = {s.http.host: f"{s.namespace}/{s.name}" for other in cp.list_namespaces()
              if other.namespace != manifest.namespace
              for s in other.services.values() if s.http is not None}
    return plan_against(manifest, machines, cp.namespace(manifest.namespace), claims)


def plan_against(
    manifest: Manifest, machines: Mapping[str, Machine], state: NamespaceState,
    gateway_hosts: Mapping[str, str] | None = None,
) -> DeployPlan:
    """The plan against given facts (what :func:`make_plan` reads, passed in for tests);
    ``gateway_hosts`` are the hosts other namespaces' services answer to (host -> ``ns/name``)."""
    _check_machines_known(manifest, machines)
    _check_routing(manifest, gateway_hosts or {})
    volumes = tuple(
        _volume_action(i, volume, manifest, state.volumes.get(volume.name))
        for i, volume in enumerate(manifest.volumes)
    )
    services = _service_actions(manifest, state.services)
    _check_receivers(manifest, machines, volumes, services)
    capacity = _check_capacity(machines, volumes, state.volumes)
    declared = {v.name for v in manifest.volumes}
    return DeployPlan(
        namespace=manifest.namespace,
        digest=manifest.digest(),
        volumes=volumes,
        services=services,
        capacity=capacity,
        retained_volumes=tuple(sorted(set(state.volumes) - declared)),
    )


def _check_machines_known(manifest: Manifest, machines: Mapping[str, Machine]) -> None:
    known = sorted(machines)
    references = [(f"volumes[{i}].owner", v.owner) for i, v in enumerate(manifest.volumes)]
    references += [(f"services[{i}].placement", s.placement)
                   for i, s in enumerate(manifest.services)]
    if manifest.intent is not None:
        for name, hint in manifest.intent.volumes.items():
            if hint.move is not None:
                references.append((f"intent.volumes.{name}.move.from_machine",
                                   hint.move.from_machine))
    for path, machine in references:
        if machine not in machines:
            raise UnknownPlacement(path, machine, known)


def _check_routing(manifest: Manifest, gateway_hosts: Mapping[str, str]) -> None:
    """What every machine's DNS and gateway could not serve: names that are not DNS labels,
    and a gateway host another namespace's service answers to."""
    if not is_dns_label(manifest.namespace):
        raise NotADnsLabel("namespace", "namespace", manifest.namespace)
    for i, service in enumerate(manifest.services):
        if not is_dns_label(service.name):
            raise NotADnsLabel(f"services[{i}].name", "service name", service.name)
        holder = gateway_hosts.get(service.http.host) if service.http is not None else None
        if service.http is not None and holder is not None:
            raise GatewayHostClaimed(f"services[{i}].http.host", service.http.host, holder)


def _volume_action(
    index: int, volume: ManifestVolume, manifest: Manifest, current: Volume | None
) -> VolumeAction:
    move = manifest.move_of(volume.name)
    move_path = f"intent.volumes.{volume.name}.move.from_machine"
    if current is None:
        if move is not None:
            raise MoveSourceMismatch(move_path, volume.name, move.from_machine, None)
        return VolumeAction("create", volume.name, volume.owner, volume.quota)
    if current.quota != volume.quota:
        raise QuotaChangeUnsupported(f"volumes[{index}].quota", volume.name, current.quota,
                                     volume.quota)
    if current.owner == volume.owner:
        # Also the re-run of a move that already committed: the data is where it should be.
        return VolumeAction("keep", volume.name, volume.owner, volume.quota,
                            dataset=current.dataset)
    if move is None:
        raise VolumeOwnerConflict(f"volumes[{index}].owner", volume.name, current.owner,
                                  volume.owner)
    if move.from_machine != current.owner:
        raise MoveSourceMismatch(move_path, volume.name, move.from_machine, current.owner)
    return VolumeAction("move", volume.name, volume.owner, volume.quota,
                        source=current.owner, dataset=current.dataset)


def _service_actions(
    manifest: Manifest, current: Mapping[str, Service]
) -> tuple[ServiceAction, ...]:
    actions = []
    for service in manifest.services:
        wanted = service_fact(manifest.namespace, service)
        existing = current.get(service.name)
        if existing is None:
            actions.append(ServiceAction("start", service.name, wanted.machine,
                                         image=wanted.image))
            continue
        changes = tuple(
            what for what, differs in (
                ("image", existing.image != wanted.image),
                ("config", existing.config != wanted.config),
                ("http", existing.http != wanted.http),
                ("placement", existing.machine != wanted.machine),
            ) if differs
        )
        actions.append(ServiceAction("replace" if changes else "keep", service.name,
                                     wanted.machine, existing.machine, wanted.image, changes))
    declared = {s.name for s in manifest.services}
    for name, existing in sorted(current.items()):
        if name not in declared:
            actions.append(ServiceAction("remove", name, None, existing.machine, existing.image))
    return tuple(actions)


def _check_receivers(
    manifest: Manifest,
    machines: Mapping[str, Machine],
    volumes: tuple[VolumeAction, ...],
    services: tuple[ServiceAction, ...],
) -> None:
    """Machines that get something new (a volume, or a service not there before) must be
    active and must have heartbeated."""
    receivers = [(f"volumes[{i}].owner", a.machine)
                 for i, a in enumerate(volumes) if a.kind in ("create", "move")]
    index = {s.name: i for i, s in enumerate(manifest.services)}
    receivers += [(f"services[{index[a.name]}].placement", a.machine) for a in services
                  if a.machine is not None and a.machine != a.previous_machine]
    for path, machine_id in receivers:
        machine = machines[machine_id]
        if machine.lifecycle == "draining":
            raise MachineDraining(path, machine_id)
        if machine.last_heartbeat is None:
            raise MachineSilent(path, machine_id)


def _check_capacity(
    machines: Mapping[str, Machine],
    volumes: tuple[VolumeAction, ...],
    current: Mapping[str, Volume],
) -> tuple[MachineCapacity, ...]:
    """New volumes reserve their quota on their machine (a moved one its current size); the
    sum must fit in the free space of the pool's last report."""
    needed: dict[str, int] = {}
    names: dict[str, list[str]] = {}
    for action in volumes:
        if action.kind == "create":
            size = action.quota or 0
        elif action.kind == "move":
            size = current[action.name].size
        else:
            continue
        needed[action.machine] = needed.get(action.machine, 0) + size
        names.setdefault(action.machine, []).append(action.name)
    checks = []
    for machine_id, size in sorted(needed.items()):
        free = machines[machine_id].capacity.pool_free
        if size > free or free == 0:
            raise InsufficientCapacity(machine_id, size, free, names[machine_id])
        checks.append(MachineCapacity(machine_id, free, size))
    return tuple(checks)
