"""The service definition that the runtime turns into a container, and what it reports back.

Kept deliberately small: it is what a deploy manifest's service template and a migration need to
recreate a container identically on another machine. Every container ployz creates carries labels
tying it to its namespace, service and deploy, so the runtime can find its own containers again
after a restart without any local bookkeeping.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

RESERVED_LABEL_PREFIX = "ployz."
LABEL_NAMESPACE = "ployz.namespace"
LABEL_SERVICE = "ployz.service"
LABEL_DEPLOY = "ployz.deploy"
STOP_TIMEOUT_S = 10.0
"""How long a stopping container gets to exit on SIGTERM before it is killed."""
REQUEST_TIMEOUT_S = 60.0
"""How long the runtime waits for one answer of the container engine: a start or a create
under load can take tens of seconds, and whoever asks an agent for one waits longer than this."""

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
DEPLOY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

RestartPolicy = Literal["no", "always", "unless-stopped", "on-failure"]
NetworkMode = Literal["host", "none"]


def absolute_path(path: str) -> str:
    """Refuses a relative or unnormalized path: Docker binds only absolute paths, and one such
    as ``/data/../etc`` names another place than it reads as."""
    if not path.startswith("/") or posixpath.normpath(path) != path:
        raise ValueError(f"must be an absolute, normalized path, got {path!r}")
    return path


def unreserved_labels(labels: dict[str, str]) -> dict[str, str]:
    """Refuses label keys under ``ployz.``: those are how the runtime finds its own containers
    again, so a user's label must not set or shadow them."""
    reserved = sorted(key for key in labels if key.startswith(RESERVED_LABEL_PREFIX))
    if reserved:
        raise ValueError(
            f"label keys starting with '{RESERVED_LABEL_PREFIX}' are reserved: {reserved}")
    return labels


AbsolutePath = Annotated[str, AfterValidator(absolute_path)]
UserLabels = Annotated[dict[str, str], AfterValidator(unreserved_labels)]


class Mount(BaseModel):
    """A host directory (normally a ZFS dataset's mountpoint) bound into the container."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: AbsolutePath
    target: AbsolutePath
    read_only: bool = False


class Healthcheck(BaseModel):
    """Docker healthcheck: ``test`` is ``["CMD", ...]`` or ``["CMD-SHELL", "..."]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test: list[str] = Field(min_length=2)
    interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=3, ge=1)
    start_period_s: float = Field(default=0.0, ge=0)

    @field_validator("test")
    @classmethod
    def _check_test(cls, test: list[str]) -> list[str]:
        if test[0] not in ("CMD", "CMD-SHELL"):
            raise ValueError(f"must start with 'CMD' or 'CMD-SHELL', got {test[0]!r}")
        return test


class Resources(BaseModel):
    """Limits enforced by the kernel through Docker (cgroups); absent means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_bytes: int | None = Field(default=None, ge=6 * 1024 * 1024)
    cpus: float | None = Field(default=None, gt=0)


class ServiceAddress(BaseModel):
    """The service's stable address, on the machine's service bridge: a bridge carrying the
    cluster's whole range of service addresses, one on every machine, so the container keeps
    its address on whichever machine it runs (the overlay routes it there)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    network: str
    """The cluster's service range (CIDR); its first host is the bridge's own address."""


class ServiceSpec(BaseModel):
    """Everything needed to create one container of a service for one deploy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(pattern=NAME_PATTERN)
    service: str = Field(pattern=NAME_PATTERN)
    deploy: str = Field(pattern=DEPLOY_PATTERN)
    image: str = Field(min_length=1)
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    user: str | None = None
    restart: RestartPolicy = "unless-stopped"
    network: NetworkMode = "host"
    """The container's network when it has no ``address``."""
    address: ServiceAddress | None = None
    """The service's address: the container then sits on the service bridge with it."""
    labels: UserLabels = Field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    resources: Resources = Field(default_factory=Resources)

    @property
    def container_name(self) -> str:
        """Unique per deploy, so a new deploy's container can start next to the old one."""
        return f"ployz-{self.namespace}-{self.service}-{self.deploy}"

    def all_labels(self) -> dict[str, str]:
        return {
            **self.labels,
            LABEL_NAMESPACE: self.namespace,
            LABEL_SERVICE: self.service,
            LABEL_DEPLOY: self.deploy,
        }


def service_labels(namespace: str, service: str | None = None) -> dict[str, str]:
    """Label filter selecting a namespace's containers, or one service's."""
    labels = {LABEL_NAMESPACE: namespace}
    if service is not None:
        labels[LABEL_SERVICE] = service
    return labels


ContainerState = Literal["created", "running", "paused", "restarting", "removing", "exited", "dead"]
Health = Literal["starting", "healthy", "unhealthy"]


class ContainerInfo(BaseModel):
    """What the daemon reports about one container, reduced to what callers decide on."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    image: str
    state: ContainerState
    health: Health | None
    exit_code: int | None
    labels: dict[str, str]
    mounts: list[Mount]
    started_at: str | None

    @property
    def ready(self) -> bool:
        """Running, and healthy if the container has a healthcheck."""
        return self.state == "running" and self.health in (None, "healthy")
