"""Containers through the Docker Engine API (the ``docker`` SDK over a unix socket).

One :class:`DockerRuntime` per Docker daemon. Every docker SDK exception is translated here, once,
into the typed errors of :mod:`ployz.runtime.errors`; nothing above this module sees the SDK.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from ployz.runtime.errors import (
    ContainerExists,
    ContainerExited,
    ContainerNotFound,
    ContainerUnhealthy,
    DaemonUnreachable,
    DockerRequestFailed,
    ImageMissing,
    MountSourceMissing,
    WaitTimeout,
)
from ployz.runtime.model import REQUEST_TIMEOUT_S, STOP_TIMEOUT_S, ContainerInfo, Mount, ServiceSpec

DEFAULT_SOCKET = "/var/run/docker.sock"
SERVICE_NETWORK = "ployz-services"
"""The Docker network of the service bridge (see :class:`~ployz.runtime.model.ServiceAddress`)."""
SERVICE_BRIDGE = "ployz-svc"
"""Its interface: no NAT (the overlay routes service addresses; nothing is masqueraded)."""
_NEVER_STARTED = "0001-01-01T00:00:00Z"
_POLL_INTERVAL_S = 0.1
_LOG_TAIL_LINES = 20
_SECONDS_TO_NS = 1_000_000_000


class DockerRuntime:
    """Creates, starts, stops, inspects and removes ployz containers on one Docker daemon."""

    def __init__(self, socket: str = DEFAULT_SOCKET,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.socket = socket
        self._request_timeout_s = request_timeout_s
        self._docker: docker.DockerClient | None = None
        self._connect_lock = threading.Lock()  # the agent calls in from many worker threads
        self._network_lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, operation: str, container: str | None = None) -> Iterator[None]:
        """Maps SDK and transport exceptions to ployz's typed runtime errors."""
        try:
            yield
        except docker.errors.ImageNotFound as exc:
            raise ImageMissing(_image_of(exc)) from exc
        except docker.errors.NotFound as exc:
            if container is None:
                raise DockerRequestFailed(operation, _explanation(exc)) from exc
            raise ContainerNotFound(container) from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and container is not None and operation == "create":
                raise ContainerExists(container) from exc
            raise DockerRequestFailed(operation, _explanation(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise DaemonUnreachable(self.socket, str(exc)) from exc
        except docker.errors.DockerException as exc:
            # Creating the client asks the daemon for its API version; any failure there means
            # the daemon did not answer. Elsewhere the SDK refused the request itself.
            if operation == "connect":
                raise DaemonUnreachable(self.socket, str(exc)) from exc
            raise DockerRequestFailed(operation, str(exc)) from exc

    def _client(self) -> docker.DockerClient:
        with self._connect_lock:
            if self._docker is None:
                with self._translated("connect"):
                    self._docker = docker.DockerClient(
                        base_url=f"unix://{self.socket}", timeout=int(self._request_timeout_s)
                    )
            return self._docker

    def close(self) -> None:
        with self._connect_lock:
            if self._docker is not None:
                self._docker.close()
                self._docker = None

    def version(self) -> str:
        """The daemon's version; also the cheapest way to prove it answers."""
        with self._translated("query version"):
            return str(self._client().version()["Version"])

    # -- images ----------------------------------------------------------------------------

    def has_image(self, image: str) -> bool:
        try:
            with self._translated("inspect image"):
                self._client().images.get(image)
        except ImageMissing:
            return False
        return True

    def import_rootfs(self, rootfs_tar: bytes, reference: str, changes: list[str]) -> str:
        """Imports a root file system tarball as image ``reference`` (``repo:tag``); returns id.

        ``changes`` are Dockerfile instructions applied on import (``CMD``, ``ENV``, ...).
        """
        repository, _, tag = reference.rpartition(":")
        if not repository or "/" in tag:
            raise ValueError(f"image reference must be 'repository:tag', got {reference!r}")
        client = self._client()
        with self._translated("import image"):
            client.api.import_image_from_data(
                rootfs_tar, repository=repository, tag=tag, changes=changes
            )
            return str(client.images.get(reference).id)

    # -- containers ------------------------------------------------------------------------

    def create(self, spec: ServiceSpec) -> ContainerInfo:
        """Creates (does not start) the container of ``spec``; creation is kept apart from
        starting so that callers can prepare a container before a cutover window opens."""
        for mount in spec.mounts:
            if not os.path.isdir(mount.source):
                raise MountSourceMissing(mount.source)
        name = spec.container_name
        client = self._client()
        arguments = _create_arguments(spec)
        if spec.address is not None:
            self._ensure_service_network(spec.address.network)
            arguments["network"] = SERVICE_NETWORK
            arguments["networking_config"] = {SERVICE_NETWORK: client.api.create_endpoint_config(
                ipv4_address=spec.address.address)}
        with self._translated("create", name):
            container = client.containers.create(name=name, **arguments)
            return _info(container.attrs)

    def _ensure_service_network(self, subnet: str) -> None:
        """Creates the service bridge for ``subnet`` unless it exists; one for another range
        is refused (the cluster's range does not change under running services)."""
        client = self._client()
        with self._network_lock, self._translated("create the service network"):
            found = client.networks.list(names=[SERVICE_NETWORK])
            if not found:
                gateway = str(ipaddress.ip_network(subnet).network_address + 1)
                client.networks.create(
                    SERVICE_NETWORK, driver="bridge",
                    ipam=docker.types.IPAMConfig(pool_configs=[
                        docker.types.IPAMPool(subnet=subnet, gateway=gateway)]),
                    options={"com.docker.network.bridge.name": SERVICE_BRIDGE,
                             "com.docker.network.bridge.enable_ip_masquerade": "false"})
                return
            configs = (found[0].attrs.get("IPAM") or {}).get("Config") or []
            subnets = [c.get("Subnet") for c in configs]
            if subnets != [subnet]:
                raise DockerRequestFailed(
                    "create the service network",
                    f"network {SERVICE_NETWORK} exists for {subnets}, not the cluster's service "
                    f"range {subnet}: remove it (`docker network rm {SERVICE_NETWORK}`) once no "
                    "container uses it")

    def start(self, name: str) -> ContainerInfo:
        with self._translated("start", name):
            container = self._client().containers.get(name)
            container.start()
            container.reload()
            return _info(container.attrs)

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> ContainerInfo:
        """Stops the container (SIGTERM, then SIGKILL after ``timeout_s``); a no-op if stopped."""
        with self._translated("stop", name):
            container = self._client().containers.get(name)
            container.stop(timeout=max(0, math.ceil(timeout_s)))
            container.reload()
            return _info(container.attrs)

    def remove(self, name: str, force: bool = False) -> None:
        """Removes the container; ``force`` also kills it if it runs. Volumes are host
        directories owned by ZFS, so nothing but the container itself is removed."""
        with self._translated("remove", name):
            self._client().containers.get(name).remove(force=force, v=False)

    def inspect(self, name: str) -> ContainerInfo:
        with self._translated("inspect", name):
            return _info(self._client().containers.get(name).attrs)

    def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        """Containers (running or not) carrying every one of ``labels``, sorted by name; a
        label whose value is None matches any value."""
        label_filter = [
            key if value is None else f"{key}={value}" for key, value in sorted(labels.items())
        ]
        with self._translated("list containers"):
            containers = self._client().containers.list(
                all=True, filters={"label": label_filter}, ignore_removed=True
            )
            return sorted((_info(c.attrs) for c in containers), key=lambda info: info.name)

    def wait_ready(self, name: str, timeout_s: float = 60.0) -> ContainerInfo:
        """Waits until the container runs, and is healthy if it has a healthcheck.

        Fails fast, with the container's last output, when it exits or restarts instead, or
        when Docker declares it unhealthy. Without a healthcheck "ready" can only mean "its
        process runs"; services that need more should define a healthcheck.
        """
        deadline = time.monotonic() + timeout_s
        with self._translated("inspect", name):
            container = self._client().containers.get(name)
            while True:
                info = _info(container.attrs)
                # Docker resets RestartCount when a container is started through the API, so a
                # non-zero count means the process died since ``start``: it is crash-looping.
                restarted = container.attrs["RestartCount"] > 0
                if info.ready and not restarted:
                    return info
                if info.state in ("exited", "dead", "restarting") or restarted:
                    tail = container.logs(tail=_LOG_TAIL_LINES).decode("utf-8", "replace")
                    # A running container has already been restarted: its last status is lost.
                    last_status = container.attrs["State"]["ExitCode"]
                    raise ContainerExited(
                        name, None if info.state == "running" else last_status, tail
                    )
                if info.health == "unhealthy":
                    raise ContainerUnhealthy(name, _last_health_output(container.attrs))
                if time.monotonic() >= deadline:
                    raise WaitTimeout(name, timeout_s, info.state)
                time.sleep(_POLL_INTERVAL_S)
                container.reload()


def _create_arguments(spec: ServiceSpec) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command,
        "entrypoint": spec.entrypoint,
        "environment": dict(spec.env),
        "labels": spec.all_labels(),
        "user": spec.user or "",
        "restart_policy": {"Name": spec.restart},
        "mounts": [
            docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ],
    }
    if spec.address is None:
        arguments["network_mode"] = spec.network
    if spec.resources.memory_bytes is not None:
        arguments["mem_limit"] = spec.resources.memory_bytes
    if spec.resources.cpus is not None:
        arguments["nano_cpus"] = round(spec.resources.cpus * 1_000_000_000)
    if spec.healthcheck is not None:
        check = spec.healthcheck
        arguments["healthcheck"] = {
            "test": check.test,
            "interval": int(check.interval_s * _SECONDS_TO_NS),
            "timeout": int(check.timeout_s * _SECONDS_TO_NS),
            "retries": check.retries,
            "start_period": int(check.start_period_s * _SECONDS_TO_NS),
        }
    return arguments


def _info(attrs: dict[str, Any]) -> ContainerInfo:
    state = attrs["State"]
    status = state["Status"]
    health = state.get("Health")
    started_at = state.get("StartedAt")
    return ContainerInfo(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        image=attrs["Config"]["Image"],
        state=status,
        health=health["Status"] if health else None,
        exit_code=state["ExitCode"] if status in ("exited", "dead") else None,
        labels=attrs["Config"].get("Labels") or {},
        mounts=[
            Mount(source=m["Source"], target=m["Destination"], read_only=not m["RW"])
            for m in attrs.get("Mounts") or []
            if m.get("Type") == "bind"
        ],
        started_at=None if started_at in (None, "", _NEVER_STARTED) else started_at,
    )


def _last_health_output(attrs: dict[str, Any]) -> str:
    log = (attrs["State"].get("Health") or {}).get("Log") or []
    return str(log[-1].get("Output", "")) if log else ""


def _explanation(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _image_of(exc: docker.errors.ImageNotFound) -> str:
    """The daemon says ``No such image: NAME``; keep NAME for the typed error."""
    text = _explanation(exc)
    marker = "No such image: "
    return text.split(marker, 1)[1].strip() if marker in text else text
