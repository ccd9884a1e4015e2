"""The facts the control plane holds: the one place that defines the control-plane schema.

Every fact is an immutable pydantic model. Both backends store these models as JSON documents, so
the schema lives here and nowhere else (no SQL columns or NATS subjects to keep in step).

Identifiers (machine ids, namespaces, service and volume names) are restricted to letters, digits,
``_`` and ``-``: they become parts of storage keys (NATS KV keys are dot-separated subjects), and a
dot or a wildcard in a name would make one key look like the prefix of another.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ployz.control.errors import InvalidName

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
IDENTIFIER_RULE = "1-63 letters, digits, '_' or '-', starting with a letter or digit"
_IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise :class:`InvalidName`."""
    if not isinstance(value, str) or not _IDENTIFIER_RE.match(value):
        raise InvalidName(kind, str(value), IDENTIFIER_RULE)
    return value


def utcnow() -> datetime:
    """Wall-clock time: lease expiry is compared across machines, so it cannot be monotonic."""
    return datetime.now(UTC)


def _check_ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


def _check_subnet(value: str) -> str:
    ipaddress.ip_network(value, strict=False)
    return value


class Fact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Lifecycle = Literal["active", "draining"]


class Capacity(Fact):
    """What a machine's agent reports at each heartbeat."""

    pool_size: int = Field(default=0, ge=0)
    pool_free: int = Field(default=0, ge=0)
    pool_used: int = Field(default=0, ge=0)
    containers: int = Field(default=0, ge=0)


def _check_wireguard_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != WIREGUARD_KEY_BYTES:
        raise ValueError("a WireGuard public key is 32 bytes in base64 (44 characters)")
    return value


def _check_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("an endpoint is HOST:PORT with a port of 1-65535")
    return value


WIREGUARD_KEY_BYTES = 32
WireGuardKey = Annotated[str, AfterValidator(_check_wireguard_key)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]


class Machine(Fact):
    """A member of the cluster. ``wireguard_key`` and ``endpoint`` (where its WireGuard listens,
    as the other machines reach it) make it a peer of every other machine's overlay interface;
    ``overlay_ip`` and ``subnet`` are allocated by the control plane when it joins."""

    id: Identifier
    overlay_ip: Annotated[str, AfterValidator(_check_ip)]
    subnet: Annotated[str, AfterValidator(_check_subnet)]
    wireguard_key: WireGuardKey | None = None
    endpoint: Endpoint | None = None
    lifecycle: Lifecycle = "active"
    capacity: Capacity = Capacity()
    last_heartbeat: datetime | None = None
    created: datetime = Field(default_factory=utcnow)


class Service(Fact):
    """A service's definition and where it is placed.

    ``config`` is the container template (command, entrypoint, env, mounts, user, resources,
    labels, restart, readiness, ...) exactly as the deploy layer validated it; the control plane
    stores it and does not interpret it.
    """

    namespace: Identifier
    name: Identifier
    image: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    machine: Identifier


class Volume(Fact):
    """A ZFS-backed volume, owned by exactly one machine at any time."""

    namespace: Identifier
    name: Identifier
    dataset: str = Field(min_length=1)
    owner: Identifier
    quota: int | None = Field(default=None, gt=0)
    size: int = Field(default=0, ge=0)


class Route(Fact):
    """Where the traffic of a service goes; flipped by the commit of a deploy."""

    namespace: Identifier
    service: Identifier
    machine: Identifier
    endpoint: str | None = None


class TransferEvidence(Fact):
    """What the receiver acknowledged for the final send of a volume moved to another machine.

    ``guid`` is the final snapshot's guid on the source and ``received_guid`` the guid the target
    reported after its receive; a commit refuses evidence where they differ.
    """

    namespace: Identifier
    volume: Identifier
    source: Identifier
    target: Identifier
    snapshot: str = Field(min_length=1)
    guid: int
    received_guid: int
    base_guid: int | None = None
    bytes: int = Field(ge=0)
    checksum: str = Field(min_length=1)
    acknowledged_at: datetime


class Lease(Fact):
    """A named lock with a time to live.

    ``token`` is the fencing token: it grows by one at every acquisition of this name, also when
    the previous lease expired or was released, so a write carrying an older token is detectably
    stale. A released or expired lease stays stored so the next token can follow it.
    """

    name: str
    holder: str
    token: int = Field(ge=1)
    acquired_at: datetime
    expires_at: datetime
    released: bool = False

    def is_held(self, now: datetime) -> bool:
        return not self.released and now < self.expires_at


DeployStatus = Literal["applying", "committed", "failed", "failed-after-commit"]
DeployPhase = Literal["plan", "apply", "commit", "cleanup", "done"]


class Deploy(Fact):
    """One run of a deploy (a plain deploy, a migration, a drain step).

    Status ``committed`` is set only by the commit that carries this deploy's id (``commit_seq``
    then names it); everything before that is ``applying`` or ``failed``. ``detail`` is what the
    deploy layer needs to resume or roll back after an interruption (manifest hash, source and
    target machines, snapshot names); the control plane stores it without interpreting it.
    """

    id: Identifier
    namespace: Identifier
    kind: Identifier
    phase: DeployPhase = "plan"
    status: DeployStatus = "applying"
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    commit_seq: int | None = None
    created: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)


# --- Changes a deploy commit applies -------------------------------------------------------------


class PutService(Fact):
    """Create a service or replace its whole definition (image, config, placement)."""

    op: Literal["put_service"] = "put_service"
    service: Service


class RemoveService(Fact):
    op: Literal["remove_service"] = "remove_service"
    name: Identifier


class PutVolume(Fact):
    """Create a volume or replace its record (dataset, owner, quota, size)."""

    op: Literal["put_volume"] = "put_volume"
    volume: Volume


class RemoveVolume(Fact):
    op: Literal["remove_volume"] = "remove_volume"
    name: Identifier


class SetVolumeOwner(Fact):
    op: Literal["set_volume_owner"] = "set_volume_owner"
    volume: Identifier
    owner: Identifier


class SetPlacement(Fact):
    op: Literal["set_placement"] = "set_placement"
    service: Identifier
    machine: Identifier


class SetRoute(Fact):
    op: Literal["set_route"] = "set_route"
    route: Route


class RecordTransfer(Fact):
    op: Literal["record_transfer"] = "record_transfer"
    evidence: TransferEvidence


Change = Annotated[
    PutService
    | RemoveService
    | PutVolume
    | RemoveVolume
    | SetVolumeOwner
    | SetPlacement
    | SetRoute
    | RecordTransfer,
    Field(discriminator="op"),
]


class DeployCommit(Fact):
    """An immutable, numbered record of what one commit set in a namespace.

    ``seq`` counts from 1 per namespace with no gaps; ``id`` is unique across all commits and lets
    a writer whose acknowledgement was lost recognise its own commit.
    """

    namespace: Identifier
    seq: int = Field(ge=1)
    id: str
    deploy_id: Identifier | None = None
    fencing_token: int = Field(ge=1)
    holder: str
    committed_at: datetime
    changes: tuple[Change, ...]


class NamespaceState(Fact):
    """Everything a commit can change in one namespace, plus that namespace's deploy lock.

    Both backends store it as ONE document, replaced by compare-and-swap: that is what makes a
    commit all-or-nothing and lets the fencing check and the write happen in the same step.
    """

    namespace: Identifier
    lock: Lease | None = None
    services: dict[str, Service] = Field(default_factory=dict)
    volumes: dict[str, Volume] = Field(default_factory=dict)
    routes: dict[str, Route] = Field(default_factory=dict)
    transfers: dict[str, TransferEvidence] = Field(default_factory=dict)
    last_commit: DeployCommit | None = None

    @property
    def commit_seq(self) -> int:
        return self.last_commit.seq if self.last_commit else 0
