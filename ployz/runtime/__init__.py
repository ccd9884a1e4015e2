"""Containers through the Docker Engine API: the service model, the runtime and its errors."""

from ployz.runtime.docker_runtime import DEFAULT_SOCKET, DockerRuntime
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
    "DEFAULT_SOCKET",
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
    "DockerRuntime",
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
