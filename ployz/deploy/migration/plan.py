"""The plan of a migration: what ``migrate preview`` prints and ``migrate apply`` executes.

It reads the control plane and asks the two agents read-only questions (pool space, dataset
sizes, whether the image is there) and has them probe the link between them for the estimate,
so it changes nothing: no snapshot, no lock, no write. The
deploy plan of the moved manifest (:func:`ployz.deploy.plan.make_plan`) does the checks every
deploy does (unknown or draining machine, never-heartbeated target); this adds what only a move
needs: the live free space of the target pool against the data it will receive, with a margin,
and a free dataset name there.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ployz.agent.api import Agent, int_prop
from ployz.control.link_fit import link_now
from ployz.control.models import Machine, Service
from ployz.control.plane import ControlPlane
from ployz.deploy.agents import AgentLookup, machine_map
from ployz.deploy.current import current_manifest, move_service
from ployz.deploy.errors import ImageNotOnMachine, UnknownPlacement
from ployz.deploy.manifest import Manifest
from ployz.deploy.migration.errors import (
    MigrationRefused,
    TargetDatasetExists,
    TargetWithoutRoom,
)
from ployz.deploy.migration.estimate import Prediction, costs_of, held_to, predict
from ployz.deploy.migration.link_probe import BackgroundProbe
from ployz.deploy.migration.ref import ServiceRef
from ployz.deploy.plan import DeployPlan, make_plan
from ployz.deploy.specs import dataset_name

ROOM_MARGIN = 0.10
"""Share of the moved data the target pool must have free on top of it: the data grows while
pre-copy runs, and a pool filled to the brim slows every write on that machine."""


PHASES = ("lock", "pre-copy", "fence", "final-send", "start", "commit", "cleanup")


@dataclass(frozen=True)
class VolumeMovePlan:
    """One volume: where its data is and goes, its size and the estimated bytes of its sends.

    ``initial_send`` is the full send of pre-copy (what the dataset references now, or the
    ``send_space`` of its latest snapshot plus what was written since)."""

    name: str
    source_dataset: str
    target_dataset: str
    size: int
    initial_send: int
    guid: int
    """The source dataset's guid: another dataset of that name is other data."""


@dataclass(frozen=True)
class TargetRoom:
    machine: str
    pool: str
    free: int
    needed: int
    margin: float

    @property
    def has_room(self) -> bool:
        return self.needed <= self.free


@dataclass(frozen=True)
class MigrationPlan:
    ref: ServiceRef
    source: str
    target: str
    image: str
    manifest: Manifest
    deploy_plan: DeployPlan
    volumes: tuple[VolumeMovePlan, ...]
    room: TargetRoom
    prediction: Prediction

    @property
    def digest(self) -> str:
        return self.manifest.digest()

    @property
    def placement(self) -> dict[str, Any]:
        """Where things are once the migration committed."""
        return {"service": self.target, "volumes": {v.name: self.target for v in self.volumes}}

    def check_room(self) -> None:
        if not self.room.has_room:
            raise TargetWithoutRoom(self.target, self.room.needed, self.room.free,
                                    self.room.margin)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.ref),
            "source": self.source,
            "target": self.target,
            "image": self.image,
            "manifest_digest": self.digest,
            "volumes": [asdict(v) for v in self.volumes],
            "target_pool": {**asdict(self.room), "has_room": self.room.has_room},
            "phases": list(PHASES),
            "placement": self.placement,
            "estimate": self.prediction.to_json(),
        }


def plan_migration(
    cp: ControlPlane, agents: AgentLookup, ref: ServiceRef, to_machine: str,
    max_downtime_s: float | None = None, *, sample_writes: bool = True,
    bwlimit: float = 0.0,
) -> MigrationPlan:
    """The plan of moving ``ref`` to ``to_machine``, with its estimate for a downtime budget of
    ``max_downtime_s`` (by default :func:`~.estimate.default_budget`); raises a typed refusal
    when it cannot be done (nothing is changed either way). The service's writes are sampled
    while a probe measures the link between the two agents (:mod:`.link_probe`); without
    ``sample_writes`` neither is (a plan made only for its refusals need not wait for them),
    and the write rate is left unknown. ``bwlimit``: the sends are held to it, so the link's
    rate is taken as at most that, and the link is not probed."""
    machines = machine_map(cp)
    service, manifest = moved_manifest(cp, ref, to_machine, machines)
    deploy_plan = make_plan(manifest, cp)
    target = agents.agent(machines[to_machine])
    if not target.containers.has_image(service.image):
        raise ImageNotOnMachine(ref.service, service.image, to_machine)
    capacity = target.zfs.capacity() if deploy_plan.moves else None
    pool = capacity.pool if capacity else ""
    source = agents.agent(machines[service.machine])
    volumes = tuple(
        _volume_plan(source, target, action.name, str(action.dataset),
                     dataset_name(pool, ref.namespace, action.name), to_machine)
        for action in deploy_plan.moves
    )
    needed = int(sum(v.size for v in volumes) * (1 + ROOM_MARGIN))
    room = TargetRoom(to_machine, pool, capacity.free if capacity else 0, needed, ROOM_MARGIN)
    costs = costs_of(cp, ref.namespace, ref.service)
    sample_s = agents.write_sample_s if sample_writes else 0.0
    # under a bandwidth limit the sends' rate is at most the limit, and a probe at the link's
    # full rate would break the limit the operator set for this migration or drain
    probe = (BackgroundProbe(source, target, agents.key, sample_s)
             if sample_s > 0 and volumes and not bwlimit else None)
    writes = write_rate(source, [v.source_dataset for v in volumes], sample_s)
    probed = probe.result() if probe is not None else None
    probe_rate = probed.bytes_per_s if probed is not None else None
    link = held_to(link_now(cp.link_rate(service.machine, to_machine), service.machine,
                            to_machine, probe_rate), bwlimit)
    prediction = predict(sum(v.initial_send for v in volumes), writes, link, costs,
                         max_downtime_s, probe_rate)
    return MigrationPlan(ref, service.machine, to_machine, service.image, manifest, deploy_plan,
                         volumes, room, prediction)


def write_rate(source: Agent, datasets: list[str], sample_s: float) -> float | None:
    """Bytes per second the service writes to its volumes, from the growth of their write
    counters over ``sample_s`` (overwrites included: ``written`` would miss those until the
    first snapshot); None when not sampled or not countable."""
    if not datasets:
        return 0.0
    if sample_s <= 0:
        return None

    before, started = source.zfs.bytes_written(datasets), time.monotonic()
    time.sleep(sample_s)
    after, ended = source.zfs.bytes_written(datasets), time.monotonic()
    if before is None or after is None:
        return None
    return round(max(0, after - before) / (ended - started), 1)


def moved_manifest(cp: ControlPlane, ref: ServiceRef, to_machine: str,
                   machines: dict[str, Machine] | None = None) -> tuple[Service, Manifest]:
    """The service as committed and the manifest that moves it (what ``render-manifest``
    prints and ``apply`` submits); refuses an unknown machine or service and a no-op move."""
    machines = machine_map(cp) if machines is None else machines
    if to_machine not in machines:
        raise UnknownPlacement("--to", to_machine, sorted(machines))
    state = cp.namespace(ref.namespace)
    service = state.services.get(ref.service)
    if service is None:
        known = ", ".join(sorted(state.services)) or "none"
        raise MigrationRefused(f"unknown service {ref} (services of namespace "
                               f"{ref.namespace!r}: {known})")
    if service.machine == to_machine:
        raise MigrationRefused(f"service {ref} already runs on {to_machine!r}: the target must "
                               "be another machine")
    return service, move_service(current_manifest(cp, ref.namespace), ref.service, to_machine)


def _volume_plan(source: Agent, target: Agent, name: str, source_dataset: str,
                 target_dataset: str, to_machine: str) -> VolumeMovePlan:
    if target.zfs.exists(target_dataset):
        raise TargetDatasetExists(to_machine, target_dataset)
    props = source.zfs.get(source_dataset, ["referenced", "written", "guid"])
    referenced = int_prop(props, "referenced")
    snapshots = source.zfs.snapshots(source_dataset)
    if snapshots:
        latest = max(snapshots, key=lambda s: s.createtxg).name
        initial = source.zfs.send_space(latest) + int_prop(props, "written")
    else:
        initial = referenced
    return VolumeMovePlan(name, source_dataset, target_dataset, referenced, initial,
                          int_prop(props, "guid"))
