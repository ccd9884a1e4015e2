"""Draining a machine: it is marked ``draining`` (no deploy or migration places anything new on
it), and with ``migrate_services`` every service placed on it moves away through the same
migration as ``ployzctl migrate apply``, one at a time, each to the active machine with the most
free pool space that has room for it. One service failing to move does not stop the others: the
drain reports each result and the machine stays draining until an operator activates it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ployz.agent.errors import AgentError
from ployz.control import ControlPlane, ControlPlaneError
from ployz.deploy.agents import AgentLookup
from ployz.deploy.errors import DeployError
from ployz.deploy.events import Draining, Emit, ignore, step
from ployz.deploy.migration.apply import migrate
from ployz.deploy.migration.plan import plan_migration
from ployz.deploy.migration.ref import ServiceRef


@dataclass
class DrainOutcome:
    service: str
    target: str | None
    status: str
    """``moved`` or ``failed``."""
    error: str | None = None
    cutover: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "target": self.target, "status": self.status,
                "error": self.error, "cutover_s": self.cutover}


class NoTargetWithRoom(DeployError):
    def __init__(self, service: ServiceRef, tried: list[str]) -> None:
        where = ", ".join(tried) if tried else "none is active and heartbeating"
        super().__init__(f"no machine can take {service}: tried {where}")


def services_on(cp: ControlPlane, machine_id: str) -> list[ServiceRef]:
    return sorted((ServiceRef(s.namespace, s.name) for s in cp.list_services()
                   if s.machine == machine_id), key=str)


def candidates(cp: ControlPlane, machine_id: str) -> list[str]:
    """Active, heartbeating machines other than ``machine_id`` that reach their container
    runtime, most free pool space first."""
    usable = [m for m in cp.list_machines() if m.id != machine_id and m.lifecycle == "active"
              and m.last_heartbeat is not None and m.capacity.runtime_up]
    return [m.id for m in sorted(usable, key=lambda m: (-m.capacity.pool_free, m.id))]


def choose_target(cp: ControlPlane, agents: AgentLookup, machine_id: str,
                  service: ServiceRef) -> str:
    tried = []
    for candidate in candidates(cp, machine_id):
        if plan_migration(cp, agents, service, candidate).room.has_room:
            return candidate
        tried.append(candidate)
    raise NoTargetWithRoom(service, tried)


def drain(cp: ControlPlane, agents: AgentLookup, machine_id: str, *,
          migrate_services: bool, keep_source: bool = False,
          emit: Emit = ignore) -> list[DrainOutcome]:
    cp.set_lifecycle(machine_id, "draining")
    emit(step(f"{machine_id} is draining: nothing new is placed on it"))
    if not migrate_services:
        return []
    outcomes = []
    for service in services_on(cp, machine_id):
        target = None
        try:
            target = choose_target(cp, agents, machine_id, service)
            emit(Draining(service=str(service), target=target))
            result = migrate(cp, agents, service, target, keep_source=keep_source,
                             emit=_tagged(emit, str(service)))
            outcomes.append(DrainOutcome(str(service), target, "moved",
                                         cutover=result.cutover))
        except (DeployError, ControlPlaneError, AgentError) as exc:
            outcomes.append(DrainOutcome(str(service), target, "failed", str(exc)))
    return outcomes


def _tagged(emit: Emit, service: str) -> Emit:
    """``emit`` with every event naming ``service``."""
    return lambda event: emit(event.model_copy(update={"service": service}))
