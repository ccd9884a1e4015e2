"""How a deploy commit's changes turn one namespace state into the next (pure, no storage).

The rules here are the namespace's invariants: every fact belongs to the commit's namespace,
changes name services and volumes that exist (or that an earlier change of the same commit
created), a volume has exactly one owner, and transfer evidence is accepted only if the receiver
acknowledged the same snapshot guid the source sent and the volume ends up owned by the target.
"""

from __future__ import annotations

from collections.abc import Iterable

from ployz.control.errors import InvalidChange, UnknownService, UnknownVolume
from ployz.control.models import (
    Change,
    NamespaceState,
    PutService,
    PutVolume,
    RecordTransfer,
    RemoveService,
    RemoveVolume,
    SetPlacement,
    SetRoute,
    SetVolumeOwner,
)


def referenced_machines(changes: Iterable[Change]) -> set[str]:
    """Every machine id the changes mention, to check they exist before committing."""
    machines: set[str] = set()
    for change in changes:
        match change:
            case PutService(service=service):
                machines.add(service.machine)
            case PutVolume(volume=volume):
                machines.add(volume.owner)
            case SetVolumeOwner(owner=owner):
                machines.add(owner)
            case SetPlacement(machine=machine):
                machines.add(machine)
            case SetRoute(route=route):
                machines.add(route.machine)
            case RecordTransfer(evidence=evidence):
                machines.update((evidence.source, evidence.target))
    return machines


def apply_changes(state: NamespaceState, changes: tuple[Change, ...]) -> NamespaceState:
    """The namespace state after ``changes``, in order; raises if any change is invalid."""
    if not changes:
        raise InvalidChange(f"a commit to namespace {state.namespace!r} needs at least one change")
    ns = state.namespace
    services = dict(state.services)
    volumes = dict(state.volumes)
    routes = dict(state.routes)
    transfers = dict(state.transfers)

    def same_namespace(namespace: str, what: str) -> None:
        if namespace != ns:
            raise InvalidChange(f"{what} belongs to namespace {namespace!r}, not {ns!r}")

    def service(name: str) -> None:
        if name not in services:
            raise UnknownService(ns, name)

    def volume(name: str) -> None:
        if name not in volumes:
            raise UnknownVolume(ns, name)

    for change in changes:
        match change:
            case PutService(service=new):
                same_namespace(new.namespace, f"service {new.name!r}")
                services[new.name] = new
            case RemoveService(name=name):
                service(name)
                del services[name]
                routes.pop(name, None)
            case PutVolume(volume=new):
                same_namespace(new.namespace, f"volume {new.name!r}")
                volumes[new.name] = new
            case RemoveVolume(name=name):
                volume(name)
                del volumes[name]
                transfers.pop(name, None)
            case SetVolumeOwner(volume=name, owner=owner):
                volume(name)
                volumes[name] = volumes[name].model_copy(update={"owner": owner})
            case SetPlacement(service=name, machine=machine):
                service(name)
                services[name] = services[name].model_copy(update={"machine": machine})
            case SetRoute(route=route):
                same_namespace(route.namespace, f"route of {route.service!r}")
                service(route.service)
                routes[route.service] = route
            case RecordTransfer(evidence=evidence):
                same_namespace(evidence.namespace, f"transfer evidence of {evidence.volume!r}")
                volume(evidence.volume)
                if evidence.guid != evidence.received_guid:
                    raise InvalidChange(
                        f"transfer of volume {ns}/{evidence.volume}: the target acknowledged "
                        f"snapshot guid {evidence.received_guid}, the source sent {evidence.guid}"
                    )
                transfers[evidence.volume] = evidence

    for change in changes:
        if isinstance(change, RecordTransfer):
            evidence = change.evidence
            if evidence.volume not in volumes:
                raise UnknownVolume(ns, evidence.volume)
            owner = volumes[evidence.volume].owner
            if owner != evidence.target:
                raise InvalidChange(
                    f"transfer evidence says volume {ns}/{evidence.volume} moved to "
                    f"{evidence.target!r}, but after this commit it is owned by {owner!r}"
                )

    return state.model_copy(
        update={"services": services, "volumes": volumes, "routes": routes, "transfers": transfers}
    )
