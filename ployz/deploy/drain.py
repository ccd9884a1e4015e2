"""Draining a machine: it is marked ``draining`` (no deploy or migration places anything new on
it), and with ``migrate_services`` every service placed on it moves away through the same
migration as ``ployzctl migrate apply``, up to ``parallel`` at a time (each under its own
namespace's lock, on agent connections of its own), each to the active machine with the most
free pool space that has room for it once the room promised to the moves already under way is
set aside. A bandwidth limit is shared by the moves running at once. One service failing to
move does not stop the others: the drain reports each result and the machine stays draining
until an operator activates it again.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ployz.agent.errors import AgentError
from ployz.control import ControlPlane, ControlPlaneError
from ployz.deploy.agents import AgentLookup
from ployz.deploy.errors import DeployError
from ployz.deploy.events import Draining, Emit, Event, ignore, step
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


class Promised:
    """Pool space set aside on each machine for the moves under way to it."""

    def __init__(self) -> None:
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    def choose(self, cp: ControlPlane, agents: AgentLookup, machine_id: str,
               service: ServiceRef) -> tuple[str, int]:
        """The target for ``service`` and the room it takes there, set aside until
        :meth:`release`; :class:`NoTargetWithRoom` when none has it."""
        tried = []
        for candidate in candidates(cp, machine_id):
            room = plan_migration(cp, agents, service, candidate, sample_writes=False).room
            with self._lock:
                promised = self._bytes.get(candidate, 0)
                if room.needed <= room.free - promised:
                    self._bytes[candidate] = promised + room.needed
                    return candidate, room.needed
            tried.append(candidate)
        raise NoTargetWithRoom(service, tried)

    def release(self, machine: str, size: int) -> None:
        with self._lock:
            self._bytes[machine] -= size


def drain(cp: ControlPlane, agents: AgentLookup, machine_id: str, *,
          migrate_services: bool, keep_source: bool = False, parallel: int = 1,
          bwlimit: float = 0.0, emit: Emit = ignore) -> list[DrainOutcome]:
    """Marks ``machine_id`` draining and, with ``migrate_services``, moves its services away,
    ``parallel`` at once, sharing ``bwlimit`` bytes per second (0: unlimited): every send
    leaves from the drained machine, whose agent keeps them to the limit together."""
    if parallel < 1:
        raise DeployError(f"--parallel must be at least 1, not {parallel}")
    cp.set_lifecycle(machine_id, "draining")
    emit(step(f"{machine_id} is draining: nothing new is placed on it"))
    if not migrate_services:
        return []
    services = services_on(cp, machine_id)
    promised = Promised()
    limit_group = f"drain-{uuid.uuid4().hex}"
    lock = threading.Lock()

    def move(service: ServiceRef) -> DrainOutcome:
        target = None
        own = agents.fork()
        try:
            target, room = promised.choose(cp, own, machine_id, service)
            try:
                with lock:
                    emit(Draining(service=str(service), target=target))
                result = migrate(cp, own, service, target, keep_source=keep_source,
                                 bwlimit=bwlimit, limit_group=limit_group,
                                 emit=_tagged(emit, str(service), lock))
            finally:
                promised.release(target, room)
            return DrainOutcome(str(service), target, "moved", cutover=result.cutover)
        except (DeployError, ControlPlaneError, AgentError) as exc:
            return DrainOutcome(str(service), target, "failed", str(exc))
        finally:
            own.close()

    if parallel == 1 or len(services) <= 1:
        return [move(service) for service in services]
    with ThreadPoolExecutor(parallel, "ployz-drain") as pool:
        return list(pool.map(move, services))


def _tagged(emit: Emit, service: str, lock: threading.Lock) -> Emit:
    """``emit`` with every event naming ``service``, one event at a time across the moves."""

    def tagged(event: Event) -> None:
        with lock:
            emit(event.model_copy(update={"service": service}))

    return tagged
