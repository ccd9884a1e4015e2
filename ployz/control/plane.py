"""The control plane: the durable facts of a cluster, over either storage backend.

Storage model (the same for SQLite and NATS JetStream KV, see ``store.py``):

- ``namespaces/<ns>``: ONE document per namespace holding its services, volumes, routes, latest
  transfer evidence per volume, its deploy lock (the lease ``deploy/<ns>``) and its latest deploy
  commit. A commit replaces this document by compare-and-swap after checking, on the very version
  it replaces, that the fencing token is the lock's current one. So the fencing check and the
  write are one atomic step, and every fact of a commit becomes visible at once or not at all,
  on a store that has no multi-key transactions (NATS KV).
- ``commits/<ns>.<seq>``: the archive of immutable deploy commits. A commit is first durable in
  its namespace document; copying it to the archive and marking its deploy ``committed`` happen
  right after and are idempotent ("roll forward"). Whoever next touches the namespace (the next
  commit, a reader of commits or deploys) finishes that step if a killed writer did not, so no
  commit is lost and every commit but the latest is in the archive before a newer one replaces
  it in the namespace document.
- ``cluster/cluster``: the one cluster document (name, trusted operator keys, address ranges) with
  every member's allocation (overlay IP, subnet, WireGuard key). A join allocates by one
  compare-and-swap of it, so two concurrent joins never get the same address or share a key;
  the machine document is created right after (and the allocation undone if that fails).
- ``machines/<id>``, ``deploys/<id>``, ``leases/<name>``, ``invites/<id>``: one document each.

Every write is a read-modify-write retried on conflict (``_mutate``). A document remembers the ids
of its last few writes, so a writer whose acknowledgement was lost (a NATS leader change) sees on
retry that its write already landed instead of applying it twice.

Why one storage model for both backends, although SQLite alone could update several rows in one
transaction: the rules (fencing, validation, numbering, roll-forward) are then written once, above
a two-call compare-and-swap interface, and the same contract suite proves both backends.

Limit: a namespace is one document, so its size is bounded by the store's largest value (1 MiB by
default on NATS): thousands of services per namespace would need the document split.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from ployz.control import leases
from ployz.control.commits import apply_changes, referenced_machines
from ployz.control.cutover_fold import fold_cutover
from ployz.control.errors import (
    ClusterExists,
    ControlPlaneBusy,
    ControlPlaneError,
    DuplicateWireGuardKey,
    InvalidArgument,
    InvalidDeployTransition,
    InvalidName,
    InviteExpired,
    InviteUsed,
    MachineBusy,
    MachineExists,
    NoCluster,
    UnknownCommit,
    UnknownDeploy,
    UnknownInvite,
    UnknownMachine,
    UnknownService,
    UnknownVolume,
)
from ployz.control.link_fit import fold_send
from ployz.control.models import (
    CLUSTER_KEY,
    DEFAULT_OVERLAY,
    DEFAULT_SUBNET_PREFIX,
    DEFAULT_SUBNETS,
    INVITE_ID_PATTERN,
    Allocation,
    Capacity,
    Change,
    ClusterInfo,
    CutoverCosts,
    Deploy,
    DeployCommit,
    DeployPhase,
    DeployStatus,
    Endpoint,
    Invite,
    Lease,
    Lifecycle,
    LinkRate,
    Machine,
    NamespaceState,
    Removal,
    RemoveService,
    RouteAcks,
    Service,
    Volume,
    WireGuardKey,
    check_name,
    next_allocation,
    next_service_address,
    service_key,
    utcnow,
)
from ployz.control.store import DocumentStore, RevisionConflict, StoreWatch

M = TypeVar("M", bound=BaseModel)

_MAX_ATTEMPTS = 200
_REMEMBERED_OPS = 8
_CHANGES = TypeAdapter(tuple[Change, ...])
_WIREGUARD_KEY = TypeAdapter(WireGuardKey)
_ENDPOINT = TypeAdapter(Endpoint)
_INVITE_ID_RE = re.compile(INVITE_ID_PATTERN)


def _encode(doc: BaseModel, ops: Sequence[str]) -> bytes:
    return json.dumps({"ops": list(ops), "doc": doc.model_dump(mode="json")}).encode()


def _decode(raw: bytes) -> tuple[list[str], dict[str, Any]]:
    envelope = json.loads(raw)
    return envelope["ops"], envelope["doc"]


class ControlPlane:
    """Reads and atomic updates of the cluster's facts. Thread-safe; one per process is enough."""

    def __init__(self, store: DocumentStore, location: str | None = None) -> None:
        self._store = store
        self._location = location or store.url

    @property
    def url(self) -> str:
        """Where the store is, without credentials: for output and logs."""
        return self._store.url

    @property
    def location(self) -> str:
        """The URL this control plane was reached at, credentials included: the one to keep
        (after a move has been followed, not the one given)."""
        return self._location

    def moved_to(self) -> str | None:
        """Where the control plane moved to, if this store was sealed by a move."""
        return self._store.moved_to()

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- machines ------------------------------------------------------------------------------

    def register_machine(self, machine: Machine) -> Machine:
        """Add a machine, or update its address and capacity if it is known.

        A known machine keeps its lifecycle (set by operators) and its creation time.
        """

        def register(current: Machine | None) -> Machine:
            if current is None:
                return machine
            return current.model_copy(
                update={
                    "overlay_ip": machine.overlay_ip,
                    "subnet": machine.subnet,
                    "capacity": machine.capacity,
                    "last_heartbeat": machine.last_heartbeat or current.last_heartbeat,
                }
            )

        return self._mutate("machines", machine.id, Machine, register)

    def heartbeat(self, machine_id: str, capacity: Capacity | None = None) -> Machine:
        def beat(current: Machine | None) -> Machine:
            if current is None:
                raise UnknownMachine(machine_id)
            update: dict[str, Any] = {"last_heartbeat": utcnow()}
            if capacity is not None:
                update["capacity"] = capacity
            return current.model_copy(update=update)

        return self._mutate("machines", check_name("machine id", machine_id), Machine, beat)

    def set_lifecycle(self, machine_id: str, lifecycle: Lifecycle) -> Machine:
        if lifecycle not in get_args(Lifecycle):
            raise InvalidArgument(f"lifecycle must be active or draining, not {lifecycle!r}")

        def mark(current: Machine | None) -> Machine:
            if current is None:
                raise UnknownMachine(machine_id)
            return current.model_copy(update={"lifecycle": lifecycle})

        return self._mutate("machines", check_name("machine id", machine_id), Machine, mark)

    def get_machine(self, machine_id: str) -> Machine:
        machine = self._read("machines", check_name("machine id", machine_id), Machine)
        if machine is None:
            raise UnknownMachine(machine_id)
        return machine

    def list_machines(self) -> list[Machine]:
        return self._list("machines", Machine)

    def watch_machines(self) -> StoreWatch:
        """Wakes when any machine joins, leaves or changes (its heartbeats included)."""
        return self._store.watch("machines")

    # --- the cluster and its members -----------------------------------------------------------

    def create_cluster(
        self,
        name: str,
        trust: Sequence[str],
        *,
        overlay: str = DEFAULT_OVERLAY,
        subnets: str = DEFAULT_SUBNETS,
        subnet_prefix: int = DEFAULT_SUBNET_PREFIX,
    ) -> ClusterInfo:
        """Create this control plane's one cluster, trusting the operator keys ``trust``.

        Run again with the same name and keys, it returns the cluster as it is (``machine init``
        is idempotent); anything else is :class:`ClusterExists`.
        """
        wanted = _validated(
            ClusterInfo,
            f"cluster {check_name('cluster name', name)!r}",
            name=name,
            trust=tuple(trust),
            overlay=overlay,
            subnets=subnets,
            subnet_prefix=subnet_prefix,
        )

        def create(current: ClusterInfo | None) -> ClusterInfo:
            if current is None:
                return wanted
            if current.name != wanted.name:
                raise ClusterExists(current.name, f"not {name!r} (one control plane, one cluster)")
            if set(current.trust) != set(wanted.trust):
                raise ClusterExists(
                    current.name,
                    "it trusts other operator keys: use the key it was created with",
                )
            return current

        return self._mutate("cluster", CLUSTER_KEY, ClusterInfo, create)

    def get_cluster(self) -> ClusterInfo:
        info = self._read("cluster", CLUSTER_KEY, ClusterInfo)
        if info is None:
            raise NoCluster()
        return info

    def set_server_authority(self, key_pem: str | None) -> ClusterInfo:
        """Records (or, with None, removes) the key of the CA of the JetStream servers'
        certificates, for the machines that join to run one (see
        :attr:`ClusterInfo.server_authority`)."""

        def record(info: ClusterInfo | None) -> ClusterInfo:
            if info is None:
                raise NoCluster()
            if info.server_authority == key_pem:
                return info
            return info.model_copy(update={"server_authority": key_pem})

        return self._mutate("cluster", CLUSTER_KEY, ClusterInfo, record)

    def set_control_servers(self, machine_ids: Sequence[str]) -> ClusterInfo:
        """Records which members run the control plane's replicated servers (``machine rm``
        keeps them), once it has moved onto them."""
        for machine_id in machine_ids:
            check_name("machine id", machine_id)

        def record(info: ClusterInfo | None) -> ClusterInfo:
            if info is None:
                raise NoCluster()
            return info.model_copy(update={"control_servers": tuple(machine_ids)})

        return self._mutate("cluster", CLUSTER_KEY, ClusterInfo, record)

    # --- services' stable addresses and the routing each machine applied -----------------------

    def service_address(self, namespace: str, service: str) -> str:
        """The service's stable address, given now if it has none yet (a deploy calls this
        before the commit that first records the service; an address given to a deploy that
        then failed stays the service's). :class:`AddressesExhausted` when the range is full."""
        key = service_key(check_name("namespace", namespace), check_name("service", service))

        def give(info: ClusterInfo | None) -> ClusterInfo:
            if info is None:
                raise NoCluster()
            if key in info.service_addresses:
                return info
            addresses = {**info.service_addresses, key: next_service_address(info)}
            return info.model_copy(update={"service_addresses": addresses})

        return self._mutate("cluster", CLUSTER_KEY, ClusterInfo, give).service_addresses[key]

    def _free_service_addresses(self, namespace: str, services: Iterable[str]) -> None:
        """Frees the addresses of services a commit removed (unless deployed again since)."""
        live = set(self.namespace(namespace).services)
        keys = {service_key(namespace, name) for name in services if name not in live}

        def free(info: ClusterInfo | None) -> ClusterInfo:
            if info is None:
                raise NoCluster()
            left = {k: a for k, a in info.service_addresses.items() if k not in keys}
            if len(left) == len(info.service_addresses):
                return info
            return info.model_copy(update={"service_addresses": left})

        self._mutate("cluster", CLUSTER_KEY, ClusterInfo, free)

    def acknowledge_routes(self, machine_id: str, namespaces: dict[str, int]) -> RouteAcks:
        """Records that ``machine_id``'s agent applied the routing of these namespaces' commits
        (commit number by namespace); a namespace it no longer lists keeps its last number."""
        check_name("machine id", machine_id)

        def record(current: RouteAcks | None) -> RouteAcks:
            known = current.namespaces if current is not None else {}
            merged = {**known, **namespaces}
            if current is not None and merged == known:
                return current
            return RouteAcks(machine=machine_id, namespaces=merged)

        return self._mutate("acks", machine_id, RouteAcks, record)

    def route_acks(self) -> dict[str, RouteAcks]:
        """Every machine's acknowledgements, by machine id."""
        return {acks.machine: acks for acks in self._list("acks", RouteAcks)}

    def watch_route_acks(self) -> StoreWatch:
        return self._store.watch("acks")

    def watch_routing(self) -> StoreWatch:
        """Wakes when a machine or a namespace changes (a join, a heartbeat, a commit, a lock):
        what every machine's routing is made of."""
        return self._store.watch("machines", "namespaces")

    # --- measurements that estimates start from ------------------------------------------------

    def record_send(self, source: str, target: str, size: int, seconds: float,
                    probe_bytes_per_s: float | None = None) -> LinkRate:
        """Folds one send of ``size`` stream bytes in ``seconds`` into the link's model, and
        the probe of the link taken before it, if any
        (:func:`~ployz.control.link_fit.fold_send`)."""
        check_name("machine id", source)
        check_name("machine id", target)
        if size < 0 or not seconds > 0:
            raise InvalidArgument(f"a send of {size} bytes in {seconds} s measures nothing")
        if probe_bytes_per_s is not None and not probe_bytes_per_s > 0:
            raise InvalidArgument(f"a probe of {probe_bytes_per_s} bytes/s measures nothing")

        return self._mutate("measurements", f"link.{source}.{target}", LinkRate,
                            lambda current: fold_send(current, source, target, size, seconds,
                                                      probe_bytes_per_s))

    def link_rate(self, source: str, target: str) -> LinkRate | None:
        return self._read("measurements", f"link.{check_name('machine id', source)}."
                                          f"{check_name('machine id', target)}", LinkRate)

    def record_cutover(self, costs: CutoverCosts) -> CutoverCosts:
        """Folds the measured costs of a service's migration into the service's and into the
        cluster's (what a service that never moved is estimated from):
        :func:`~ployz.control.cutover_fold.fold_cutover`."""
        self._mutate("measurements", "cutover-latest", CutoverCosts,
                     lambda stored: fold_cutover(stored, costs))
        return self._mutate("measurements", f"cutover.{costs.namespace}.{costs.service}",
                            CutoverCosts, lambda stored: fold_cutover(stored, costs))

    def latest_cutover_costs(self) -> CutoverCosts | None:
        return self._read("measurements", "cutover-latest", CutoverCosts)

    def cutover_costs(self, namespace: str, service: str) -> CutoverCosts | None:
        return self._read("measurements", f"cutover.{check_name('namespace', namespace)}."
                                          f"{check_name('service', service)}", CutoverCosts)

    def add_machine(self, machine_id: str, wireguard_key: str, endpoint: str) -> Machine:
        """Make a machine a member: allocate its overlay IP and subnet, and record it, active.

        The same id with the same key again returns the member as it is (a retried join, a
        re-run ``machine init``). Another machine with that key is :class:`DuplicateWireGuardKey`,
        the id already a member with another key :class:`MachineExists`, full ranges
        :class:`AddressesExhausted`. If the machine cannot be recorded once its addresses are
        allocated, they are freed again.
        """
        check_name("machine id", machine_id)
        _check_value(_WIREGUARD_KEY, wireguard_key, f"machine {machine_id!r}: WireGuard key")
        _check_value(_ENDPOINT, endpoint, f"machine {machine_id!r}: endpoint")
        existing = self._read("machines", machine_id, Machine)
        if existing is not None:
            return _same_member(existing, wireguard_key)
        holder = next(
            (m.id for m in self.list_machines() if m.wireguard_key == wireguard_key), None
        )
        if holder is not None:
            raise DuplicateWireGuardKey(wireguard_key, holder)
        allocation, made = self._allocate(machine_id, wireguard_key)
        machine = Machine(
            id=machine_id,
            overlay_ip=allocation.overlay_ip,
            subnet=allocation.subnet,
            wireguard_key=wireguard_key,
            endpoint=endpoint,
        )

        def create(current: Machine | None) -> Machine:
            return machine if current is None else _same_member(current, wireguard_key)

        try:
            return self._mutate("machines", machine_id, Machine, create)
        except BaseException as error:
            if made:
                self._undo_allocation(machine_id, allocation, error)
            raise

    def remove_machine(self, machine_id: str, *, force: bool = False) -> Removal:
        """Take a machine out of the cluster: delete it and free its overlay IP and subnet.

        Refused with :class:`MachineBusy`, naming each, while services are placed on it, it owns
        volumes, it runs one of the control plane's replicated servers (that server cannot move
        to another machine yet), or it is not draining; with ``force`` it goes anyway and those
        services and volumes are reported as orphans (the control plane then runs on the other
        servers). The machine document goes before its allocation, so an
        address is never handed out while a machine still holds it; if freeing the allocation
        fails, the machine document is put back.
        """
        check_name("machine id", machine_id)
        states = self.list_namespaces()
        services = [
            f"{ns.namespace}/{name}"
            for ns in states
            for name, s in sorted(ns.services.items())
            if s.machine == machine_id
        ]
        volumes = [
            f"{ns.namespace}/{name}"
            for ns in states
            for name, v in sorted(ns.volumes.items())
            if v.owner == machine_id
        ]

        info = self._read("cluster", CLUSTER_KEY, ClusterInfo)
        serves = info is not None and machine_id in info.control_servers

        def check(machine: Machine) -> None:
            blockers = [f"service {s} is placed on it" for s in services]
            blockers += [f"volume {v} is owned by it" for v in volumes]
            if serves:
                blockers.append("it runs one of the control plane's three JetStream servers, "
                                "which cannot move to another machine yet")
            if machine.lifecycle != "draining":
                blockers.append(
                    f"lifecycle is {machine.lifecycle}: drain it first "
                    f"(`ployzctl machine drain {machine_id} --migrate`)"
                )
            if blockers and not force:
                raise MachineBusy(machine_id, tuple(blockers))

        machine = self._delete_machine(machine_id, check)
        try:
            self._free_allocation(machine_id)
        except BaseException as error:
            self._restore_machine(machine, error)
            raise
        return Removal(machine=machine, orphans=(*services, *volumes))

    def _allocate(self, machine_id: str, wireguard_key: str) -> tuple[Allocation, bool]:
        """The machine's allocation, and whether this call made it (rather than finding the one
        an interrupted join with the same key left)."""
        made = False

        def allocate(info: ClusterInfo | None) -> ClusterInfo:
            nonlocal made
            if info is None:
                raise NoCluster()
            made = False
            held = info.allocations.get(machine_id)
            if held is not None:
                if held.wireguard_key != wireguard_key:
                    raise MachineExists(machine_id, held.overlay_ip)
                return info
            for other, allocation in sorted(info.allocations.items()):
                if allocation.wireguard_key == wireguard_key:
                    raise DuplicateWireGuardKey(wireguard_key, other)
            allocations = {**info.allocations, machine_id: next_allocation(info, wireguard_key)}
            made = True
            return info.model_copy(update={"allocations": allocations})

        info = self._mutate("cluster", CLUSTER_KEY, ClusterInfo, allocate)
        return info.allocations[machine_id], made

    def _undo_allocation(
        self, machine_id: str, allocation: Allocation, error: BaseException
    ) -> None:
        def undo(info: ClusterInfo | None) -> ClusterInfo:
            if info is None:
                raise NoCluster()
            if info.allocations.get(machine_id) != allocation:
                return info
            left = {m: a for m, a in info.allocations.items() if m != machine_id}
            return info.model_copy(update={"allocations": left})

        try:
            self._mutate("cluster", CLUSTER_KEY, ClusterInfo, undo)
        except ControlPlaneError as undo_error:
            error.add_note(
                f"machine {machine_id!r}'s allocation ({allocation.overlay_ip}, "
                f"{allocation.subnet}) stays reserved ({undo_error}): the same join, retried, "
                "takes it"
            )

    def _delete_machine(self, machine_id: str, check: Callable[[Machine], None]) -> Machine:
        """Delete the machine document by compare-and-swap, once ``check`` accepts its latest
        version (a heartbeat between the read and the delete only makes it re-check)."""
        removed: Machine | None = None
        for _ in range(_MAX_ATTEMPTS):
            stored = self._store.get("machines", machine_id)
            current = Machine.model_validate(_decode(stored.value)[1]) if stored else None
            if removed is not None and (current is None or current.created != removed.created):
                # Gone since the conflict: our delete whose acknowledgement was lost, or a
                # concurrent removal (and perhaps a re-join, which is another machine).
                return removed
            if stored is None or current is None:
                raise UnknownMachine(machine_id)
            check(current)
            removed = current
            try:
                self._store.delete("machines", machine_id, stored.revision)
                return removed
            except RevisionConflict:
                time.sleep(random.uniform(0, 0.002))
        raise ControlPlaneBusy(f"machines/{machine_id}: {_MAX_ATTEMPTS} concurrent updates won")

    def _free_allocation(self, machine_id: str) -> None:
        if self._read("cluster", CLUSTER_KEY, ClusterInfo) is None:
            return  # a machine registered without a cluster (the sandbox) holds no allocation

        def free(info: ClusterInfo | None) -> ClusterInfo:
            if info is None:
                raise NoCluster()
            rejoined = self._store.get("machines", machine_id) is not None
            if machine_id not in info.allocations or rejoined:
                return info  # nothing held, or the machine joined again meanwhile and keeps it
            left = {m: a for m, a in info.allocations.items() if m != machine_id}
            servers = tuple(m for m in info.control_servers if m != machine_id)
            return info.model_copy(update={"allocations": left, "control_servers": servers})

        self._mutate("cluster", CLUSTER_KEY, ClusterInfo, free)

    def _restore_machine(self, machine: Machine, error: BaseException) -> None:
        try:
            self._store.create("machines", machine.id, _encode(machine, ()))
        except (ControlPlaneError, RevisionConflict) as restore_error:
            error.add_note(
                f"machine {machine.id!r} is deleted but its allocation ({machine.overlay_ip}, "
                f"{machine.subnet}) stays reserved ({restore_error}): add it again with the same "
                "WireGuard key, which takes that allocation, then remove it again"
            )

    # --- invites -------------------------------------------------------------------------------

    def create_invite(self, ttl_s: float) -> Invite:
        """A new single-use invite, valid for ``ttl_s`` seconds; its id goes into a join token."""
        if not ttl_s > 0:
            raise InvalidArgument(f"an invite's ttl must be positive seconds, got {ttl_s!r}")
        now = utcnow()
        invite = Invite(
            id=secrets.token_hex(16), created=now, expires=now + timedelta(seconds=ttl_s)
        )

        def create(current: Invite | None) -> Invite:
            if current is not None:
                raise ControlPlaneBusy(f"invite id {invite.id} was drawn twice: try again")
            return invite

        return self._mutate("invites", invite.id, Invite, create)

    def get_invite(self, invite_id: str) -> Invite:
        invite = self._read("invites", _check_invite_id(invite_id), Invite)
        if invite is None:
            raise UnknownInvite(invite_id)
        return invite

    def consume_invite(self, invite_id: str, machine_id: str) -> Invite:
        """Mark the invite used by ``machine_id``: an invite admits one machine, before it
        expires (:class:`InviteUsed`, :class:`InviteExpired` otherwise)."""
        check_name("machine id", machine_id)

        def consume(current: Invite | None) -> Invite:
            if current is None:
                raise UnknownInvite(invite_id)
            if current.used_by is not None and current.used_at is not None:
                raise InviteUsed(invite_id, current.used_by, current.used_at)
            now = utcnow()
            if now >= current.expires:
                raise InviteExpired(invite_id, current.expires)
            return current.model_copy(update={"used_by": machine_id, "used_at": now})

        return self._mutate("invites", _check_invite_id(invite_id), Invite, consume)

    def release_invite(self, invite_id: str, machine_id: str) -> None:
        """Undo :meth:`consume_invite` by the same machine, whose join failed afterwards; a
        no-op for an invite it did not consume."""
        check_name("machine id", machine_id)
        invite = self._read("invites", _check_invite_id(invite_id), Invite)
        if invite is None or invite.used_by != machine_id:
            return

        def release(current: Invite | None) -> Invite:
            if current is None:
                raise UnknownInvite(invite_id)
            if current.used_by != machine_id:
                return current
            return current.model_copy(update={"used_by": None, "used_at": None})

        self._mutate("invites", invite_id, Invite, release)

    # --- leases --------------------------------------------------------------------------------

    def acquire(self, name: str, holder: str, ttl: float) -> Lease:
        """Acquire lease ``name`` for ``ttl`` seconds with a new, higher fencing token.

        Raises :class:`LockHeld` (naming the holder and the expiry) if someone else holds it.
        """
        return self._mutate_lease(
            name, lambda current: leases.acquire(current, name, holder, ttl, utcnow())
        )

    def renew(self, name: str, token: int, ttl: float) -> Lease:
        """Extend a held lease to ``ttl`` seconds from now; :class:`StaleFencingToken` if lost."""
        return self._mutate_lease(
            name, lambda current: leases.renew(current, name, token, ttl, utcnow())
        )

    def release(self, name: str, token: int) -> Lease:
        return self._mutate_lease(
            name, lambda current: leases.release(current, name, token, utcnow())
        )

    def get_lease(self, name: str) -> Lease | None:
        """The stored lease (held, expired or released), or None if never acquired."""
        leases.check_lease_name(name)
        namespace = _deploy_lock_namespace(name)
        if namespace is not None:
            return self.namespace(namespace).lock
        return self._read("leases", name, Lease)

    def _mutate_lease(self, name: str, change: Callable[[Lease | None], Lease]) -> Lease:
        leases.check_lease_name(name)
        namespace = _deploy_lock_namespace(name)
        if namespace is None:
            return self._mutate("leases", name, Lease, change)

        def change_lock(state: NamespaceState | None) -> NamespaceState:
            state = state or NamespaceState(namespace=namespace)
            return state.model_copy(update={"lock": change(state.lock)})

        lock = self._mutate("namespaces", namespace, NamespaceState, change_lock).lock
        assert lock is not None
        return lock

    # --- namespaces: services, volumes, routes, evidence ---------------------------------------

    def namespace(self, namespace: str) -> NamespaceState:
        """A consistent view of one namespace: all of one commit's facts or none of them."""
        state = self._read("namespaces", check_name("namespace", namespace), NamespaceState)
        return state or NamespaceState(namespace=namespace)

    def list_namespaces(self) -> list[NamespaceState]:
        return self._list("namespaces", NamespaceState)

    def get_service(self, namespace: str, name: str) -> Service:
        service = self.namespace(namespace).services.get(name)
        if service is None:
            raise UnknownService(namespace, name)
        return service

    def list_services(self, namespace: str | None = None) -> list[Service]:
        states = [self.namespace(namespace)] if namespace else self.list_namespaces()
        return [s for state in states for _, s in sorted(state.services.items())]

    def get_volume(self, namespace: str, name: str) -> Volume:
        volume = self.namespace(namespace).volumes.get(name)
        if volume is None:
            raise UnknownVolume(namespace, name)
        return volume

    def list_volumes(self, namespace: str | None = None) -> list[Volume]:
        states = [self.namespace(namespace)] if namespace else self.list_namespaces()
        return [v for state in states for _, v in sorted(state.volumes.items())]

    # --- deploys and commits -------------------------------------------------------------------

    def begin_deploy(
        self,
        namespace: str,
        kind: str,
        deploy_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Deploy:
        """Record a new deploy, status ``applying``, phase ``plan``."""
        deploy = Deploy(
            id=check_name("deploy id", deploy_id) if deploy_id else uuid.uuid4().hex,
            namespace=check_name("namespace", namespace),
            kind=check_name("deploy kind", kind),
            detail=detail or {},
        )

        def create(current: Deploy | None) -> Deploy:
            if current is not None:
                raise InvalidDeployTransition(deploy.id, current.status, "applying", "it exists")
            return deploy

        return self._mutate("deploys", deploy.id, Deploy, create)

    def get_deploy(self, deploy_id: str) -> Deploy:
        deploy = self._read("deploys", check_name("deploy id", deploy_id), Deploy)
        if deploy is None:
            raise UnknownDeploy(deploy_id)
        if deploy.commit_seq is None:
            # Its commit may be durable in the namespace while the roll-forward is pending.
            state = self.namespace(deploy.namespace)
            if state.last_commit and state.last_commit.deploy_id == deploy_id:
                self._settle(state)
                deploy = self._read("deploys", deploy_id, Deploy)
                assert deploy is not None
        return deploy

    def list_deploys(self, namespace: str) -> list[Deploy]:
        self._settle(self.namespace(namespace))
        deploys = [d for d in self._list("deploys", Deploy) if d.namespace == namespace]
        return sorted(deploys, key=lambda d: d.created)

    def update_deploy(
        self,
        deploy_id: str,
        *,
        phase: DeployPhase | None = None,
        status: DeployStatus | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Deploy:
        """Move a deploy to another phase and/or status, or replace its reason or detail.

        Allowed status moves: applying -> failed (before its commit), committed ->
        failed-after-commit (cleanup failed), failed-after-commit -> committed (a re-run finished
        the cleanup). ``committed`` is otherwise set only by :meth:`commit`; ``failed`` is final.
        """
        if status is not None:
            # A pending commit settled first, so the status moved from is current. A phase or
            # detail alone needs no settling (the CAS below keeps the settle's status): each
            # save of a run skips two reads, which a migration's window makes several of.
            self.get_deploy(deploy_id)

        def move(current: Deploy | None) -> Deploy:
            if current is None:
                raise UnknownDeploy(deploy_id)
            if status is not None:
                _check_deploy_transition(current, status)
            given = {"phase": phase, "status": status, "reason": reason, "detail": detail}
            update = {name: value for name, value in given.items() if value is not None}
            # Validated, not copied: a phase outside DeployPhase must not reach the store.
            return Deploy.model_validate({**current.model_dump(), **update, "updated": utcnow()})

        return self._mutate("deploys", deploy_id, Deploy, move)

    def commit(
        self,
        namespace: str,
        fencing_token: int,
        changes: Iterable[Change | dict[str, Any]],
        *,
        deploy_id: str | None = None,
    ) -> DeployCommit:
        """Apply ``changes`` atomically and append the next numbered deploy commit.

        Only while ``fencing_token`` is the current token of the namespace's deploy lock
        (:class:`StaleFencingToken` otherwise). Every change is validated first; on any error
        nothing is written. The commit is the point of no return of a deploy: its deploy (if
        given) becomes ``committed``.
        """
        check_name("namespace", namespace)
        parsed = _CHANGES.validate_python(tuple(changes))
        for machine_id in sorted(referenced_machines(parsed)):
            self.get_machine(machine_id)
        if deploy_id is not None:
            deploy = self.get_deploy(deploy_id)
            if deploy.namespace != namespace:
                raise InvalidDeployTransition(
                    deploy_id, deploy.status, "committed", f"it deploys {deploy.namespace!r}"
                )
            if deploy.status != "applying":
                raise InvalidDeployTransition(
                    deploy_id, deploy.status, "committed", "only an applying deploy can commit"
                )
        lock_name = leases.deploy_lock_name(namespace)
        commit_id = uuid.uuid4().hex
        settled: set[str] = set()

        def apply(state: NamespaceState | None) -> NamespaceState:
            state = state or NamespaceState(namespace=namespace)
            if state.last_commit is not None and state.last_commit.id not in settled:
                # The commit about to be replaced in this document must be archived first.
                self._settle(state)
                settled.add(state.last_commit.id)
            now = utcnow()
            lease = leases.require_current(state.lock, lock_name, fencing_token, now)
            record = DeployCommit(
                namespace=namespace,
                seq=state.commit_seq + 1,
                id=commit_id,
                deploy_id=deploy_id,
                fencing_token=fencing_token,
                holder=lease.holder,
                committed_at=now,
                changes=parsed,
            )
            return apply_changes(state, parsed).model_copy(update={"last_commit": record})

        state = self._mutate("namespaces", namespace, NamespaceState, apply)
        self._settle(state)
        removed = [c.name for c in parsed if isinstance(c, RemoveService)]
        if removed:
            # After the commit, nothing may fail it: an address left reserved is only kept
            # for the name (its next deploy takes it again).
            with contextlib.suppress(ControlPlaneError):
                self._free_service_addresses(namespace, removed)
        assert state.last_commit is not None
        return state.last_commit

    def list_commits(self, namespace: str) -> list[DeployCommit]:
        """Every deploy commit of the namespace, oldest first."""
        state = self.namespace(namespace)
        self._settle(state)
        return self._list("commits", DeployCommit, namespace)

    def get_commit(self, namespace: str, seq: int) -> DeployCommit:
        state = self.namespace(namespace)
        if state.last_commit is not None and state.last_commit.seq == seq:
            return state.last_commit
        stored = self._read("commits", _commit_key(namespace, seq), DeployCommit)
        if stored is None:
            raise UnknownCommit(namespace, seq)
        return stored

    # --- internals -----------------------------------------------------------------------------

    def _settle(self, state: NamespaceState) -> None:
        """Finish the roll-forward of the namespace's latest commit (idempotent)."""
        record = state.last_commit
        if record is None:
            return
        key = _commit_key(record.namespace, record.seq)
        if self._store.get("commits", key) is None:
            with contextlib.suppress(RevisionConflict):  # archived concurrently by a reader
                self._store.create("commits", key, _encode(record, ()))
        if record.deploy_id is not None:
            self._mutate("deploys", record.deploy_id, Deploy, lambda d: _mark_committed(d, record))

    def _read(self, kind: str, key: str, model: type[M]) -> M | None:
        stored = self._store.get(kind, key)
        return model.model_validate(_decode(stored.value)[1]) if stored else None

    def _list(self, kind: str, model: type[M], prefix: str = "") -> list[M]:
        stored = self._store.list(kind, prefix)
        return [model.model_validate(_decode(value.value)[1]) for _, value in stored]

    def _mutate(self, kind: str, key: str, model: type[M], change: Callable[[M | None], M]) -> M:
        """Read, change and compare-and-swap one document until the swap succeeds.

        ``change`` may run several times and may raise to abort without writing. Returning the
        very document it was given writes nothing.
        """
        op = uuid.uuid4().hex
        for _ in range(_MAX_ATTEMPTS):
            stored = self._store.get(kind, key)
            ops, raw = _decode(stored.value) if stored else ([], None)
            current = model.model_validate(raw) if raw is not None else None
            if op in ops:  # an earlier attempt landed but its acknowledgement was lost
                assert current is not None
                return current
            new = change(current)
            if new is current:
                return new
            payload = _encode(new, [*ops[-(_REMEMBERED_OPS - 1) :], op])
            try:
                if stored is None:
                    self._store.create(kind, key, payload)
                else:
                    self._store.update(kind, key, payload, stored.revision)
                return new
            except RevisionConflict:
                time.sleep(random.uniform(0, 0.002))  # desynchronise the racers
        raise ControlPlaneBusy(f"{kind}/{key}: {_MAX_ATTEMPTS} concurrent updates in a row won")



def _same_member(machine: Machine, wireguard_key: str) -> Machine:
    """The member itself when it joined with ``wireguard_key``; another machine otherwise."""
    if machine.wireguard_key != wireguard_key:
        raise MachineExists(machine.id, machine.overlay_ip)
    return machine


def _check_invite_id(invite_id: str) -> str:
    if not isinstance(invite_id, str) or not _INVITE_ID_RE.match(invite_id):
        raise InvalidName("invite id", str(invite_id), "32 lowercase hex characters")
    return invite_id


def _validated(model: type[M], what: str, **fields: Any) -> M:
    """``model`` of ``fields``; a field that does not validate is an :class:`InvalidArgument`
    naming ``what`` and every problem."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidArgument(f"{what}: {_problems(exc)}") from None


def _check_value(adapter: TypeAdapter[str], value: str, what: str) -> None:
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        raise InvalidArgument(f"{what} {value!r}: {_problems(exc)}") from None


def _problems(error: ValidationError) -> str:
    return "; ".join(_problem(detail) for detail in error.errors())


def _problem(detail: ErrorDetails) -> str:
    message = detail["msg"].removeprefix("Value error, ")
    where = ".".join(str(part) for part in detail["loc"])
    return f"{where}: {message}" if where else message


def _deploy_lock_namespace(name: str) -> str | None:
    """The namespace whose deploy lock ``name`` is, if it is one: it lives in that namespace."""
    if name.startswith(leases.DEPLOY_LOCK_PREFIX):
        rest = name[len(leases.DEPLOY_LOCK_PREFIX) :]
        if "/" not in rest:
            return rest
    return None


def _commit_key(namespace: str, seq: int) -> str:
    # Zero-padded so the archive lists in commit order.
    return f"{namespace}.{seq:012d}"


def _mark_committed(deploy: Deploy | None, record: DeployCommit) -> Deploy:
    if deploy is None:
        raise UnknownDeploy(str(record.deploy_id))
    if deploy.commit_seq == record.seq:
        return deploy
    # A deploy marked failed whose commit nevertheless landed failed after its commit.
    status: DeployStatus = "failed-after-commit" if deploy.status == "failed" else "committed"
    return deploy.model_copy(
        update={"status": status, "commit_seq": record.seq, "updated": record.committed_at}
    )


def _check_deploy_transition(deploy: Deploy, status: DeployStatus) -> None:
    allowed = {
        ("applying", "applying"),
        ("applying", "failed"),
        ("committed", "committed"),
        ("committed", "failed-after-commit"),
        ("failed-after-commit", "failed-after-commit"),
        ("failed-after-commit", "committed"),
    }
    if (deploy.status, status) in allowed:
        return
    if status == "committed" and deploy.commit_seq is None:
        why = "only a commit makes a deploy committed"
    elif status == "failed" and deploy.commit_seq is not None:
        why = f"it committed (commit #{deploy.commit_seq}): a later failure is failed-after-commit"
    elif deploy.status == "failed":
        why = "a failed deploy is final; start a new one"
    else:
        why = "not an allowed status move"
    raise InvalidDeployTransition(deploy.id, deploy.status, status, why)
