"""Bringing a migration's side effects to an end state, from its record alone.

:func:`roll_back` undoes a migration that did not commit (target container and data removed,
source containers restarted, holds released, migration snapshots destroyed); :func:`clean_up`
finishes one that did (old containers removed, holds released, migration snapshots destroyed,
the source dataset destroyed unless it is kept). Both are idempotent and check before each step,
so they serve the failing run itself and any later ``migrate apply`` that finds the record of a
killed one. Each returns what it did and what it could not do, naming machine and object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ployz.agent.client import AgentClient
from ployz.agent.errors import AgentError, RemoteError
from ployz.deploy.migration.record import MigrationRecord, VolumeRecord
from ployz.runtime.model import LABEL_DEPLOY, service_labels

STOP_TIMEOUT_S = 10.0


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def attempt(self, description: str, step: Callable[[], bool]) -> None:
        """Runs ``step``; it returns whether it changed anything (only then is it reported)."""
        try:
            if step():
                self.done.append(description)
        except AgentError as exc:
            self.left.append(f"{description}: {exc}")


@dataclass(frozen=True)
class Machines:
    """The agents of a migration's two machines."""

    source: AgentClient
    target: AgentClient


def roll_back(record: MigrationRecord, agents: Machines) -> Outcome:
    outcome = Outcome()
    ns, svc, target, source = record.namespace, record.service, record.target, record.source
    outcome.attempt(f"removed the new container on {target}",
                    lambda: _remove_containers(agents.target, ns, svc, record.deploy_id, True))
    for transfer_id in record.transfers:
        outcome.attempt(f"stopped receiver {transfer_id} on {target}",
                        partial(_cancel_receiver, agents.target, transfer_id))
    for name in record.stopped:
        outcome.attempt(f"restarted container {name} on {source}",
                        partial(_start, agents.source, name))
    for volume in record.volumes:
        outcome.attempt(f"destroyed the received dataset {volume.target_dataset} on {target}",
                        partial(_destroy_dataset, agents.target, volume.target_dataset))
        _release_and_destroy(outcome, record, volume, agents.source)
    return outcome


def clean_up(record: MigrationRecord, agents: Machines) -> Outcome:
    outcome = Outcome()
    ns, svc, target, source = record.namespace, record.service, record.target, record.source
    outcome.attempt(f"removed the old container on {source}",
                    lambda: _remove_containers(agents.source, ns, svc, record.deploy_id, False))
    for volume in record.volumes:
        _release_and_destroy(outcome, record, volume, agents.source)
        prefix = f"{volume.target_dataset}@ployz-move-{record.digest}-"
        outcome.attempt(f"destroyed the migration snapshots of {volume.target_dataset} on "
                        f"{target}",
                        partial(_destroy_snapshots, agents.target, volume.target_dataset,
                                prefix))
        if not record.keep_source:
            outcome.attempt(f"destroyed the source dataset {volume.source_dataset} on {source}",
                            partial(_destroy_dataset, agents.source, volume.source_dataset))
    return outcome


def _release_and_destroy(outcome: Outcome, record: MigrationRecord, volume: VolumeRecord,
                         source: AgentClient) -> None:
    outcome.attempt(f"released the holds on {volume.source_dataset} on {record.source}",
                    lambda: _release(source, volume.held, record.hold_tag))
    outcome.attempt(f"destroyed the migration snapshots of {volume.source_dataset} on "
                    f"{record.source}",
                    lambda: _destroy_listed(source, volume.snapshots))


def _remove_containers(client: AgentClient, namespace: str, service: str, deploy_id: str,
                       own: bool) -> bool:
    """Removes the service's containers of this deploy (``own``) or of the others."""
    listed = client.call("container.list", {"labels": service_labels(namespace, service)})
    chosen = [c["name"] for c in listed if (c["labels"].get(LABEL_DEPLOY) == deploy_id) == own]
    for name in chosen:
        client.call("container.remove", {"name": name, "force": True})
    return bool(chosen)


def _start(client: AgentClient, name: str) -> bool:
    info = client.call("container.inspect", {"name": name})
    if info["state"] == "running":
        return False
    client.call("container.start", {"name": name})
    return True


def _cancel_receiver(client: AgentClient, transfer_id: str) -> bool:
    """Stops a receiver that may still wait for its sender; never reported as a change."""
    with contextlib.suppress(RemoteError):  # no such receiver any more
        client.call("transfer.receive_cancel", {"transfer_id": transfer_id})
    return False


def _release(client: AgentClient, snapshots: list[str], tag: str) -> bool:
    held = [s for s in snapshots
            if client.call("zfs.exists", {"name": s})
            and tag in client.call("zfs.holds", {"snapshot": s})]
    if held:
        client.call("zfs.release", {"holds": {s: [tag] for s in held}})
    return bool(held)


def _destroy_listed(client: AgentClient, snapshots: list[str]) -> bool:
    present = [s for s in snapshots if client.call("zfs.exists", {"name": s})]
    if present:
        client.call("zfs.destroy_snapshots", {"snapshots": present})
    return bool(present)


def _destroy_snapshots(client: AgentClient, dataset: str, prefix: str) -> bool:
    if not client.call("zfs.exists", {"name": dataset}):
        return False
    names = [s["name"] for s in client.call("zfs.snapshots", {"dataset": dataset})
             if s["name"].startswith(prefix)]
    return _destroy_listed(client, names)


def _destroy_dataset(client: AgentClient, dataset: str) -> bool:
    """Destroys a dataset with all its snapshots, aborting a partial receive first."""
    changed = False
    if client.call("zfs.exists", {"name": dataset}) and client.call(
            "zfs.resume_token", {"dataset": dataset}) is not None:
        client.call("zfs.abort_receive", {"dataset": dataset})
        changed = True
    if not client.call("zfs.exists", {"name": dataset}):
        return changed
    snapshots = [s["name"] for s in client.call("zfs.snapshots", {"dataset": dataset})]
    if snapshots:
        client.call("zfs.destroy_snapshots", {"snapshots": snapshots})
    client.call("zfs.destroy", {"dataset": dataset})
    return True
