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
- ``machines/<id>``, ``deploys/<id>``, ``leases/<name>``: one document each.

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
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, TypeAdapter

from ployz.control import leases
from ployz.control.commits import apply_changes, referenced_machines
from ployz.control.errors import (
    ControlPlaneBusy,
    InvalidArgument,
    InvalidDeployTransition,
    UnknownCommit,
    UnknownDeploy,
    UnknownMachine,
    UnknownService,
    UnknownVolume,
)
from ployz.control.models import (
    Capacity,
    Change,
    Deploy,
    DeployCommit,
    DeployPhase,
    DeployStatus,
    Lease,
    Lifecycle,
    Machine,
    NamespaceState,
    Service,
    Volume,
    check_name,
    utcnow,
)
from ployz.control.store import DocumentStore, RevisionConflict

M = TypeVar("M", bound=BaseModel)

_MAX_ATTEMPTS = 200
_REMEMBERED_OPS = 8
_CHANGES = TypeAdapter(tuple[Change, ...])


def _encode(doc: BaseModel, ops: Sequence[str]) -> bytes:
    return json.dumps({"ops": list(ops), "doc": doc.model_dump(mode="json")}).encode()


def _decode(raw: bytes) -> tuple[list[str], dict[str, Any]]:
    envelope = json.loads(raw)
    return envelope["ops"], envelope["doc"]


class ControlPlane:
    """Reads and atomic updates of the cluster's facts. Thread-safe; one per process is enough."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    @property
    def url(self) -> str:
        return self._store.url

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
        self.get_deploy(deploy_id)  # settles a pending commit first, so the status is current

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
