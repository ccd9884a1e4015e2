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
import itertools
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from ployz.control.errors import AddressesExhausted, InvalidName

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


IPAddress = Annotated[str, AfterValidator(_check_ip)]
Network = Annotated[str, AfterValidator(_check_subnet)]


class Fact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Lifecycle = Literal["active", "draining"]


class Capacity(Fact):
    """What a machine's agent reports at each heartbeat."""

    pool_size: int = Field(default=0, ge=0)
    pool_free: int = Field(default=0, ge=0)
    pool_used: int = Field(default=0, ge=0)
    containers: int = Field(default=0, ge=0)
    runtime_up: bool = True
    """False when the agent could not reach its container runtime (Docker) at that heartbeat:
    the machine cannot start a service, so a drain does not move one there."""


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


# --- Cluster membership ---------------------------------------------------------------------------

CLUSTER_KEY = "cluster"  # the key of the one cluster document, in kind "cluster"
DEFAULT_OVERLAY = "10.210.0.0/16"
DEFAULT_SUBNETS = "10.211.0.0/16"
DEFAULT_SUBNET_PREFIX = 24
DEFAULT_SERVICE_ADDRESSES = "10.212.0.0/16"
OPERATOR_KEY_PREFIX = "ed25519:"
_ED25519_KEY_BYTES = 32
# Each machine's overlay interface needs an address besides the network and broadcast ones, and
# each container subnet a gateway besides them: so neither range may be smaller than a /30.
_SMALLEST_PREFIX = 30


def _check_ipv4_network(value: str) -> str:
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv4 network (like 10.210.0.0/16): {exc}") from None
    if network.prefixlen > _SMALLEST_PREFIX:
        raise ValueError(f"{value} is too small: a /{_SMALLEST_PREFIX} at least")
    return str(network)


def _check_operator_key(value: str) -> str:
    encoded = value.removeprefix(OPERATOR_KEY_PREFIX)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raw = b""
    if encoded == value or len(raw) != _ED25519_KEY_BYTES:
        raise ValueError(
            f"an operator public key is {OPERATOR_KEY_PREFIX}BASE64 of 32 bytes, not {value[:60]!r}"
        )
    return value


IPv4Network = Annotated[str, AfterValidator(_check_ipv4_network)]
OperatorKey = Annotated[str, AfterValidator(_check_operator_key)]


class Allocation(Fact):
    """The addresses the cluster gave one machine: its overlay IP and its containers' subnet.

    ``wireguard_key`` is the key the machine joined with: it lives here, in the cluster document,
    so that one compare-and-swap decides that no two members share an address or a key, and a
    join interrupted after its allocation is recognised (same id, same key) when it is retried.
    """

    overlay_ip: Annotated[str, AfterValidator(_check_ip)]
    subnet: Annotated[str, AfterValidator(_check_subnet)]
    wireguard_key: WireGuardKey | None = None


class ClusterInfo(Fact):
    """The one cluster document: its name, whom it trusts, and who holds which addresses.

    Machines' overlay IPs come from ``overlay`` (the lowest free host address, .1 first), their
    container subnets from ``subnets`` (the lowest free ``/subnet_prefix`` after the first one,
    whose .0 addresses look like the range itself). ``allocations`` maps a machine id to what it
    holds; removing the machine frees it for the next join.
    """

    name: Identifier
    overlay: IPv4Network = DEFAULT_OVERLAY
    subnets: IPv4Network = DEFAULT_SUBNETS
    subnet_prefix: int = Field(default=DEFAULT_SUBNET_PREFIX, ge=1, le=_SMALLEST_PREFIX)
    trust: tuple[OperatorKey, ...] = Field(min_length=1)
    allocations: dict[Identifier, Allocation] = Field(default_factory=dict)
    control_servers: tuple[Identifier, ...] = ()
    """The machines that run the replicated JetStream servers the control plane moved onto
    (the first three, with NATS); empty while it is on one server, or on SQLite."""
    services: IPv4Network = DEFAULT_SERVICE_ADDRESSES
    """Where services' stable addresses come from. Its first host address is the gateway of
    the bridge that each machine's service containers sit on, so it is never a service's."""
    service_addresses: dict[str, IPAddress] = Field(default_factory=dict)
    """Each service's stable address, by ``namespace/service``: given at its first deploy,
    kept through every migration, freed when a commit removes the service."""
    server_authority: str | None = None
    """The key (PEM) of the CA that signs the JetStream servers' TLS certificates, while the
    cluster forms: the second and third machines sign their servers' certificates with it at
    their join, and the move onto the three servers removes it (the first machine keeps it)."""
    created: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        overlay, subnets = self.overlay_network, self.subnets_network
        if overlay.overlaps(subnets):
            raise ValueError(f"the overlay {overlay} overlaps the subnets {subnets}")
        for name, other in (("overlay", overlay), ("subnets", subnets)):
            if self.services_network.overlaps(other):
                raise ValueError(f"the service addresses {self.services} overlap the {name} "
                                 f"{other}")
        if self.subnet_prefix <= subnets.prefixlen:
            raise ValueError(
                f"subnet_prefix /{self.subnet_prefix} must be longer than the subnets' "
                f"/{subnets.prefixlen}: each machine gets one part of {subnets}"
            )
        _check_allocations(self)
        _check_service_addresses(self)
        return self

    @property
    def overlay_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.overlay)

    @property
    def subnets_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnets)

    @property
    def services_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.services)

    @property
    def services_gateway(self) -> str:
        """The address each machine's service bridge holds (the range's first host)."""
        return str(self.services_network.network_address + 1)

    def machine_subnets(self) -> Iterator[ipaddress.IPv4Network]:
        """The subnets machines get, in allocation order."""
        parts = self.subnets_network.subnets(new_prefix=self.subnet_prefix)
        return itertools.islice(parts, 1, None)


def _check_allocations(info: ClusterInfo) -> None:
    """Every allocation lies in the cluster's ranges and no two overlap: the invariants the
    allocator keeps, checked whenever the document is read so a damaged one is refused."""
    overlay, subnets = info.overlay_network, info.subnets_network
    ips: dict[str, str] = {}
    nets: dict[str, str] = {}
    for machine_id, allocation in sorted(info.allocations.items()):
        ip = ipaddress.ip_address(allocation.overlay_ip)
        net = ipaddress.ip_network(allocation.subnet)
        if ip not in overlay or ip in (overlay.network_address, overlay.broadcast_address):
            raise ValueError(f"machine {machine_id}'s overlay IP {ip} is no host of {overlay}")
        if not (isinstance(net, ipaddress.IPv4Network) and net.subnet_of(subnets)):
            raise ValueError(f"machine {machine_id}'s subnet {net} is not within {subnets}")
        if net.prefixlen != info.subnet_prefix:
            raise ValueError(f"machine {machine_id}'s subnet {net} is not a /{info.subnet_prefix}")
        for held, what in ((ips, str(ip)), (nets, str(net))):
            if what in held:
                raise ValueError(f"machines {held[what]} and {machine_id} both hold {what}")
            held[what] = machine_id


def service_key(namespace: str, service: str) -> str:
    """How :attr:`ClusterInfo.service_addresses` names a service."""
    return f"{namespace}/{service}"


def _check_service_addresses(info: ClusterInfo) -> None:
    network, gateway = info.services_network, ipaddress.ip_address(info.services_gateway)
    holders: dict[str, str] = {}
    for key, address in sorted(info.service_addresses.items()):
        ip = ipaddress.ip_address(address)
        if ip not in network or ip in (network.network_address, gateway,
                                       network.broadcast_address):
            raise ValueError(f"service {key}'s address {ip} is not a service address of "
                             f"{network} (its first host is the bridges' gateway)")
        if address in holders:
            raise ValueError(f"services {holders[address]} and {key} both hold {address}")
        holders[address] = key


def next_service_address(info: ClusterInfo) -> str:
    """The lowest free service address; :class:`AddressesExhausted` when none is left."""
    taken = {*info.service_addresses.values(), info.services_gateway}
    address = _first_free((str(h) for h in info.services_network.hosts()), taken)
    if address is None:
        raise AddressesExhausted(info.name, "service address", info.services,
                                 len(info.service_addresses))
    return address


def next_allocation(info: ClusterInfo, wireguard_key: str) -> Allocation:
    """The lowest free overlay IP and the lowest free subnet of the cluster, for a machine with
    ``wireguard_key``; :class:`AddressesExhausted` when a range is full."""
    taken_ips = {a.overlay_ip for a in info.allocations.values()}
    taken_nets = {a.subnet for a in info.allocations.values()}
    ip = _first_free((str(h) for h in info.overlay_network.hosts()), taken_ips)
    if ip is None:
        raise AddressesExhausted(info.name, "overlay address", info.overlay, len(taken_ips))
    subnet = _first_free((str(n) for n in info.machine_subnets()), taken_nets)
    if subnet is None:
        raise AddressesExhausted(
            info.name, f"/{info.subnet_prefix} subnet", info.subnets, len(taken_nets)
        )
    return Allocation(overlay_ip=ip, subnet=subnet, wireguard_key=wireguard_key)


def _first_free(candidates: Iterable[str], taken: set[str]) -> str | None:
    return next((c for c in candidates if c not in taken), None)


INVITE_ID_PATTERN = r"^[0-9a-f]{32}$"


class Invite(Fact):
    """A single-use permission to join, named by the join token an operator hands out.

    ``used_by`` and ``used_at`` are set together when a joining machine consumes it.
    """

    id: Annotated[str, StringConstraints(pattern=INVITE_ID_PATTERN)]
    created: datetime
    expires: datetime
    used_by: Identifier | None = None
    used_at: datetime | None = None

    @model_validator(mode="after")
    def _check_times(self) -> Self:
        if self.expires <= self.created:
            raise ValueError(f"invite {self.id} expires before it is created")
        if (self.used_by is None) != (self.used_at is None):
            raise ValueError(f"invite {self.id}: used_by and used_at go together")
        return self


class Removal(Fact):
    """What removing a machine took out, and what it left without a machine: the services
    placed on it and the volumes it owned, as ``namespace/name`` (only when forced)."""

    machine: Machine
    orphans: tuple[str, ...] = ()


class HttpExposure(Fact):
    """HTTP requests for ``host`` reach the service's ``port`` through every machine's
    gateway."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)


class Service(Fact):
    """A service's definition and where it is placed.

    ``config`` is the container template (command, entrypoint, env, mounts, user, resources,
    labels, restart, readiness, ports, ...) exactly as the deploy layer validated it; the control
    plane stores it and does not interpret it. ``address`` is the service's stable overlay
    address (see :attr:`ClusterInfo.service_addresses`) and ``http`` its gateway name: what
    every machine's routing, DNS and gateway serve.
    """

    namespace: Identifier
    name: Identifier
    image: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    machine: Identifier
    address: IPAddress | None = None
    http: HttpExposure | None = None


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


class RouteAcks(Fact):
    """What one machine's agent has applied to its routing (WireGuard, routes, DNS, gateway):
    the commit number of each namespace it last applied. A commit's routing is in place on a
    machine once its number here is at least the commit's."""

    machine: Identifier
    namespaces: dict[Identifier, int] = Field(default_factory=dict)
    updated: datetime = Field(default_factory=utcnow)


class SendFit(Fact):
    """What a link's line is fitted from (:mod:`ployz.control.link_fit`): the recent sends'
    total weight, the weighted means of their bytes and seconds, and the weighted sums of the
    bytes' squared deviations and of the bytes' and seconds' joint deviations."""

    weight: float = Field(default=0.0, ge=0)
    mean_bytes: float = 0.0
    mean_s: float = 0.0
    spread_bytes: float = Field(default=0.0, ge=0)
    co_spread: float = 0.0


class LinkRate(Fact):
    """How fast snapshots went from one machine to another, as the migrations between them
    measured it: a send of B bytes takes about ``fixed_s + B / bytes_per_s`` (``fixed_s``: the
    receiver's set-up, the handshake, the commit). What a migration's estimate starts from."""

    source: Identifier
    target: Identifier
    bytes_per_s: float | None = Field(default=None, gt=0)
    """None until a large send was measured."""
    fixed_s: float = Field(ge=0)
    sends: int = Field(ge=1)
    measured_at: datetime = Field(default_factory=utcnow)
    fit: SendFit = Field(default_factory=SendFit)
    probe_ratio: float | None = Field(default=None, gt=0)
    """What the large sends carried beyond their fixed cost, over what a probe of the link
    measured just before them (a running mean); None until a probed migration measured it."""


class CutoverCosts(Fact):
    """What a service's migrations spent besides moving data: stopping it on the source,
    starting it on the target and waiting until it was ready, and the rest of the run (lock,
    plan, container creation, commit, route confirmation, cleanup); a running mean of the
    recent ones (:mod:`ployz.control.cutover_fold`), stamped with the latest's time."""

    namespace: Identifier
    service: Identifier
    stop_s: float = Field(ge=0)
    start_s: float = Field(ge=0)
    ready_s: float = Field(ge=0)
    overhead_s: float = Field(ge=0)
    measured_at: datetime = Field(default_factory=utcnow)


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
