"""Containers through the Docker Engine API: the service model, the runtime and its errors.

The runtime itself is :class:`ployz.runtime.docker_runtime.DockerRuntime`, imported from its
module: it brings in the Docker SDK, which the orchestrator and ployzctl, needing only the
model and the errors, should not pay for on every command."""

from ployz.runtime.errors import (
    ContainerExists,
    ContainerExited,
    ContainerNotFound,
    ContainerUnhealthy,
    DaemonUnreachable,
    DockerRequestFailed,
    ImageMissing,
    MountSourceMissing,
    RuntimeFailure,
    WaitTimeout,
)
from ployz.runtime.model import (
    LABEL_DEPLOY,
    LABEL_NAMESPACE,
    LABEL_SERVICE,
    ContainerInfo,
    Healthcheck,
    Mount,
    Resources,
    ServiceSpec,
    service_labels,
)

__all__ = [
    "LABEL_DEPLOY",
    "LABEL_NAMESPACE",
    "LABEL_SERVICE",
    "ContainerExists",
    "ContainerExited",
    "ContainerInfo",
    "ContainerNotFound",
    "ContainerUnhealthy",
    "DaemonUnreachable",
    "DockerRequestFailed",
    "Healthcheck",
    "ImageMissing",
    "Mount",
    "MountSourceMissing",
    "Resources",
    "RuntimeFailure",
    "ServiceSpec",
    "WaitTimeout",
    "service_labels",
]
