"""Translations between the manifest, the control plane's facts and the container runtime.

One place decides how a manifest service is recorded (``config`` of a control-plane
:class:`~ployz.control.Service` is its container template without the image) and turned back into
a container, so a migration recreates exactly the container a deploy created.
"""

from __future__ import annotations

from collections.abc import Mapping

from ployz.control.models import HttpExposure, Service, Volume
from ployz.control.plane import ControlPlane
from ployz.deploy.manifest import ContainerTemplate, HttpRoute, ManifestService, ManifestVolume
from ployz.runtime.model import Mount, Resources, ServiceAddress, ServiceSpec


def dataset_name(pool: str, namespace: str, volume: str) -> str:
    """``<pool>/<namespace>.<volume>``: one level below the pool, so creating it needs no parent
    datasets, and unambiguous because names never contain a dot."""
    return f"{pool}/{namespace}.{volume}"


def volume_mountpoint(pool_mountpoint: str | None, dataset: str) -> str:
    """Where a volume is mounted on its machine: under the pool's own mountpoint when it has
    one (the sandbox gives each machine's pool its own directory), else at ``/<dataset>``."""
    leaf = dataset.rsplit("/", 1)[-1]
    return f"{pool_mountpoint.rstrip('/')}/{leaf}" if pool_mountpoint else f"/{dataset}"


def service_fact(namespace: str, service: ManifestService,
                 address: ServiceAddress | None = None) -> Service:
    """The control-plane fact of a manifest service; with its ``address`` once it has one
    (a plan compares facts without it)."""
    config = service.template.model_dump(mode="json", exclude={"image"}, exclude_none=True)
    http = service.http
    return Service(
        namespace=namespace,
        name=service.name,
        image=service.template.image,
        config=config,
        machine=service.placement,
        address=address.address if address is not None else None,
        http=HttpExposure(host=http.host, port=http.port) if http is not None else None,
    )


def http_route_of(service: Service) -> HttpRoute | None:
    """The manifest's ``[services.http]`` a service fact was recorded from."""
    http = service.http
    return HttpRoute(host=http.host, port=http.port) if http is not None else None


def service_address(cp: ControlPlane, namespace: str, service: str) -> ServiceAddress:
    """The service's stable address (given now, at its first deploy) on the cluster's service
    range: what its container is created with and its fact records."""
    return ServiceAddress(address=cp.service_address(namespace, service),
                          network=cp.get_cluster().services)


def volume_fact(namespace: str, volume: ManifestVolume, dataset: str) -> Volume:
    return Volume(
        namespace=namespace, name=volume.name, dataset=dataset, owner=volume.owner,
        quota=volume.quota,
    )


def template_of(service: Service) -> ContainerTemplate:
    """The container template a control-plane service fact was recorded from."""
    return ContainerTemplate.model_validate({"image": service.image, **service.config})


def container_spec(
    service: Service,
    deploy_id: str,
    mountpoints: Mapping[str, str],
    read_only: Mapping[str, bool],
    address: ServiceAddress,
) -> ServiceSpec:
    """The runtime spec of ``service``'s container for one deploy; ``mountpoints`` maps each
    mounted volume to its host path on the service's machine."""
    template = template_of(service)
    return ServiceSpec(
        namespace=service.namespace,
        service=service.name,
        deploy=deploy_id,
        image=template.image,
        command=template.command,
        entrypoint=template.entrypoint,
        env=template.env,
        mounts=[
            Mount(source=mountpoints[volume], target=target, read_only=read_only[volume])
            for volume, target in sorted(template.mounts.items())
        ],
        user=template.user,
        restart=template.restart,
        labels=template.labels,
        healthcheck=template.readiness,
        resources=template.resources or Resources(),
        address=address,
    )
