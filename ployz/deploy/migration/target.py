"""The service's container prepared on the target machine: its received datasets mounted where
a deploy would mount them, and the container created on them, not started. ``migrate apply``
does this before the fence; the stop-first baseline of the benchmarks after it."""

from __future__ import annotations

from collections.abc import Mapping

from ployz.agent.api import Agent, str_prop
from ployz.deploy.manifest import Manifest
from ployz.deploy.specs import container_spec, service_fact, volume_mountpoint
from ployz.runtime.model import ServiceAddress


def prepare_container(target: Agent, manifest: Manifest, service: str, deploy_id: str,
                      pool: str, datasets: Mapping[str, str], address: ServiceAddress) -> str:
    """Mounts ``datasets`` (volume name -> dataset on ``target``) and creates ``service``'s
    container for ``deploy_id`` on them, with the service's stable ``address``; returns the
    container's name."""
    fact = service_fact(manifest.namespace, next(s for s in manifest.services
                                                 if s.name == service), address)
    mountpoints = {}
    if datasets:
        pool_mountpoint = str_prop(target.zfs.get(pool, ["mountpoint"]), "mountpoint")
        for volume, dataset in datasets.items():
            mountpoint = volume_mountpoint(pool_mountpoint, dataset)
            target.zfs.mount(dataset, mountpoint)
            mountpoints[volume] = mountpoint
    read_only = {v: manifest.volume(v).mode == "ro" for v in mountpoints}
    spec = container_spec(fact, deploy_id, mountpoints, read_only, address)
    target.containers.create(spec)
    return spec.container_name
