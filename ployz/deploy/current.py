"""Manifests derived from what is deployed: the namespace as committed, and that state with one
service moved to another machine (what ``ployzctl migrate render-manifest`` prints).

Deriving them from the control plane's facts, rather than from the file an operator once
deployed, keeps a migration true to the cluster even when that file is lost or was edited since.
A volume's ``mode`` is not a control-plane fact, so derived manifests say ``rw``; its ``scope``
follows from how many services mount it.
"""

from __future__ import annotations

from ployz.control.plane import ControlPlane
from ployz.deploy.errors import Issue, ManifestError, MoveRefused, NothingDeployed
from ployz.deploy.manifest import (
    Intent,
    Manifest,
    ManifestService,
    ManifestVolume,
    VolumeIntent,
    VolumeMove,
    consistency_issues,
)
from ployz.deploy.specs import http_route_of, template_of


def current_manifest(cp: ControlPlane, namespace: str) -> Manifest:
    """The manifest whose plan against the current facts changes nothing."""
    state = cp.namespace(namespace)
    if not state.services:
        raise NothingDeployed(namespace)
    services = [
        ManifestService(name=name, placement=service.machine, template=template_of(service),
                        http=http_route_of(service))
        for name, service in sorted(state.services.items())
    ]
    mounts = [volume for service in services for volume in service.template.mounts]
    volumes = [
        ManifestVolume(name=name, scope="shared" if mounts.count(name) > 1 else "single",
                       quota=volume.quota, owner=volume.owner)
        for name, volume in sorted(state.volumes.items())
    ]
    return Manifest(namespace=namespace, volumes=volumes, services=services)


def move_service(manifest: Manifest, service: str, to_machine: str) -> Manifest:
    """``manifest`` with ``service`` and the volumes it mounts placed on ``to_machine``, and a
    move intent for each volume that changes machine."""
    moved = next((s for s in manifest.services if s.name == service), None)
    if moved is None:
        known = ", ".join(s.name for s in manifest.services)
        raise MoveRefused(f"unknown service {manifest.namespace}/{service} (services: {known})")
    if moved.placement == to_machine:
        raise MoveRefused(f"service {manifest.namespace}/{service} already runs on {to_machine!r}")
    volumes = set(moved.template.mounts)
    sharing = sorted(s.name for s in manifest.services
                     if s.name != service and volumes & set(s.template.mounts))
    if sharing:
        raise MoveRefused(f"service {service!r} shares volumes with {', '.join(sharing)}; they "
                          "can only move together")
    intents = dict(manifest.intent.volumes) if manifest.intent else {}
    new_volumes = []
    for volume in manifest.volumes:
        if volume.name in volumes and volume.owner != to_machine:
            intents[volume.name] = VolumeIntent(
                move=VolumeMove(from_machine=volume.owner, to_machine=to_machine))
            volume = volume.model_copy(update={"owner": to_machine})
        new_volumes.append(volume)
    services = [s.model_copy(update={"placement": to_machine}) if s.name == service else s
                for s in manifest.services]
    result = manifest.model_copy(update={
        "volumes": new_volumes, "services": services,
        "intent": Intent(volumes=intents) if intents else None,
    })
    issues: list[Issue] = consistency_issues(result)
    if issues:
        raise ManifestError(f"{manifest.namespace} moved to {to_machine}", issues)
    return result
