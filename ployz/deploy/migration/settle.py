"""Bringing a migration's side effects to an end state, from its record alone: the
``migrate`` kind of :class:`~ployz.deploy.run.DeployRun`.

Its rollback undoes a migration that did not commit (target container and data removed,
source containers restarted, holds released, migration snapshots destroyed); its cleanup
finishes one that did (old containers removed, holds released, migration snapshots destroyed,
the source dataset destroyed unless it is kept). Both are idempotent and check before each step,
so they serve the failing run itself and any later ``migrate apply`` that finds the record of a
killed one. Each returns what it did and what it could not do, naming machine and object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from functools import partial
from typing import Any

from ployz.agent.api import Agent
from ployz.agent.errors import UnknownTransfer
from ployz.deploy.errors import DeployError
from ployz.deploy.migration.errors import MigrationAborted, MigrationFailedAfterCommit
from ployz.deploy.migration.record import MigrationRecord, VolumeRecord
from ployz.deploy.run import AgentOf, Outcome, RunKind
from ployz.deploy.undo import other_deploys, remove_container, start_container
from ployz.runtime.model import LABEL_DEPLOY, service_labels


class Migration(RunKind[MigrationRecord]):
    name = MigrationRecord.KIND

    def load(self, detail: Mapping[str, Any]) -> MigrationRecord:
        return MigrationRecord.from_detail(detail)

    def roll_back(self, record: MigrationRecord, agent_of: AgentOf) -> Outcome:
        outcome = Outcome()
        source, target = agent_of(record.source), agent_of(record.target)
        outcome.attempt(f"removed the new container on {record.target}",
                        partial(_remove_own, target, record))
        for transfer_id in record.transfers:
            outcome.attempt(f"stopped receiver {transfer_id} on {record.target}",
                            partial(_cancel_receiver, target, transfer_id))
        for name in record.stopped:
            outcome.attempt(f"restarted container {name} on {record.source}",
                            partial(start_container, source, name))
        for volume in record.volumes:
            outcome.attempt(f"destroyed the received dataset {volume.target_dataset} on "
                            f"{record.target}",
                            partial(_destroy_dataset, target, volume.target_dataset))
            _release_and_destroy(outcome, record, volume, source)
        return outcome

    def clean_up(self, record: MigrationRecord, agent_of: AgentOf) -> Outcome:
        outcome = Outcome()
        source, target = agent_of(record.source), agent_of(record.target)
        outcome.attempt(f"removed the old container on {record.source}",
                        partial(_remove_others, source, record))
        for volume in record.volumes:
            _release_and_destroy(outcome, record, volume, source)
            prefix = f"{volume.target_dataset}@ployz-move-{record.digest}-"
            outcome.attempt(f"destroyed the migration snapshots of {volume.target_dataset} on "
                            f"{record.target}",
                            partial(_destroy_snapshots, target, volume.target_dataset, prefix))
            if not record.keep_source:
                outcome.attempt(f"destroyed the source dataset {volume.source_dataset} on "
                                f"{record.source}",
                                partial(_destroy_dataset, source, volume.source_dataset))
        return outcome

    def aborted(self, record: MigrationRecord, cause: str, outcome: Outcome) -> DeployError:
        return MigrationAborted(record.deploy_id, record.step, cause, outcome.done, outcome.left)

    def failed_after_commit(self, record: MigrationRecord, seq: int,
                            problems: list[str]) -> DeployError:
        return MigrationFailedAfterCommit(record.deploy_id, seq, problems)


MIGRATION = Migration()


def _release_and_destroy(outcome: Outcome, record: MigrationRecord, volume: VolumeRecord,
                         source: Agent) -> None:
    outcome.attempt(f"released the holds on {volume.source_dataset} on {record.source}",
                    partial(_release, source, volume.held, record.hold_tag))
    outcome.attempt(f"destroyed the migration snapshots of {volume.source_dataset} on "
                    f"{record.source}",
                    partial(_destroy_listed, source, volume.snapshots))


def _remove_own(agent: Agent, record: MigrationRecord) -> bool:
    """Removes the service's container this migration created."""
    own = [c.name for c in agent.containers.list(service_labels(record.namespace,
                                                                record.service))
           if c.labels.get(LABEL_DEPLOY) == record.deploy_id]
    return _remove(agent, own)


def _remove_others(agent: Agent, record: MigrationRecord) -> bool:
    """Removes the service's containers of the deploys before this migration."""
    return _remove(agent, [c.name for c in other_deploys(agent, record.namespace,
                                                          record.service, record.deploy_id)])


def _remove(agent: Agent, names: list[str]) -> bool:
    for name in names:
        remove_container(agent, name)
    return bool(names)


def _cancel_receiver(agent: Agent, transfer_id: str) -> bool:
    """Stops a receiver that may still wait for its sender; never reported as a change."""
    with contextlib.suppress(UnknownTransfer):  # no such receiver any more
        agent.transfer.receive_cancel(transfer_id)
    return False


def _release(agent: Agent, snapshots: list[str], tag: str) -> bool:
    held = [s for s in snapshots if agent.zfs.exists(s) and tag in agent.zfs.holds(s)]
    if held:
        agent.zfs.release({s: [tag] for s in held})
    return bool(held)


def _destroy_listed(agent: Agent, snapshots: list[str]) -> bool:
    present = [s for s in snapshots if agent.zfs.exists(s)]
    if present:
        agent.zfs.destroy_snapshots(present)
    return bool(present)


def _destroy_snapshots(agent: Agent, dataset: str, prefix: str) -> bool:
    if not agent.zfs.exists(dataset):
        return False
    return _destroy_listed(agent, [s.name for s in agent.zfs.snapshots(dataset)
                                   if s.name.startswith(prefix)])


def _destroy_dataset(agent: Agent, dataset: str) -> bool:
    """Destroys a dataset with all its snapshots, aborting a partial receive first."""
    changed = False
    if agent.zfs.exists(dataset) and agent.zfs.resume_token(dataset) is not None:
        agent.zfs.abort_receive(dataset)
        changed = True
    if not agent.zfs.exists(dataset):
        return changed
    snapshots = [s.name for s in agent.zfs.snapshots(dataset)]
    if snapshots:
        agent.zfs.destroy_snapshots(snapshots)
    agent.zfs.destroy(dataset)
    return True
