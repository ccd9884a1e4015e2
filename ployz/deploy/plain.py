"""A plain deploy's durable record and how to bring it to an end state from the record alone.

Every dataset a deploy creates, every container it creates and every old container it stops is
written into the record before it is made. Rolled back (before the commit, by the failing run or
by the next run after a kill), the new containers are removed, the stopped ones restarted and
the new datasets destroyed; cleaned up (after the commit), the services it replaced or removed
lose their containers of earlier deploys. Both check before each step, so running either again
is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from pydantic import BaseModel, Field

from ployz.agent.api import Agent
from ployz.agent.errors import AgentError
from ployz.deploy.errors import DeployError, DeployFailed, DeployFailedAfterCommit
from ployz.deploy.run import AgentOf, Outcome, RunKind, RunRecord
from ployz.deploy.undo import other_deploys, remove_container, start_container
from ployz.zfs.errors import DatasetNotFound


class Placed(BaseModel):
    """A thing on a machine: a dataset, a container or a service, by name."""

    machine: str
    name: str


class DeployRecord(RunRecord):
    KIND = "deploy"

    datasets: list[Placed] = Field(default_factory=list)
    """Datasets this deploy created (destroyed by a rollback)."""
    containers: list[Placed] = Field(default_factory=list)
    """Containers this deploy created (removed by a rollback)."""
    stopped: list[Placed] = Field(default_factory=list)
    """Old containers it stopped so that a volume has one writer (restarted by a rollback)."""
    replaced: list[Placed] = Field(default_factory=list)
    """Services replaced or removed, where they ran: their older containers go at cleanup."""


class PlainDeploy(RunKind[DeployRecord]):
    name = DeployRecord.KIND

    def load(self, detail: Mapping[str, Any]) -> DeployRecord:
        return DeployRecord.from_detail(detail)

    def roll_back(self, record: DeployRecord, agent_of: AgentOf) -> Outcome:
        outcome = Outcome()
        for c in reversed(record.containers):
            outcome.attempt(f"removed container {c.name} on {c.machine}",
                            partial(remove_container, agent_of(c.machine), c.name))
        for c in reversed(record.stopped):
            outcome.attempt(f"restarted container {c.name} on {c.machine}",
                            partial(start_container, agent_of(c.machine), c.name))
        for d in reversed(record.datasets):
            outcome.attempt(f"destroyed dataset {d.name} on {d.machine}",
                            partial(_destroy, agent_of(d.machine), d.name))
        return outcome

    def clean_up(self, record: DeployRecord, agent_of: AgentOf) -> Outcome:
        outcome = Outcome()
        for s in record.replaced:
            agent = agent_of(s.machine)
            try:
                names = other_deploys(agent, record.namespace, s.name, record.deploy_id)
            except AgentError as exc:
                outcome.left.append(f"old containers of {s.name} on {s.machine}: {exc}")
                continue
            for old in names:
                outcome.attempt(f"removed {old.name} on {s.machine}",
                                partial(remove_container, agent, old.name))
        return outcome

    def aborted(self, record: DeployRecord, cause: str, outcome: Outcome) -> DeployError:
        return DeployFailed(record.deploy_id, record.step, cause, outcome.done, outcome.left)

    def failed_after_commit(self, record: DeployRecord, seq: int,
                            problems: list[str]) -> DeployError:
        return DeployFailedAfterCommit(record.deploy_id, seq, problems)


PLAIN_DEPLOY = PlainDeploy()


def _destroy(agent: Agent, dataset: str) -> bool:
    try:
        agent.zfs.destroy(dataset)
    except DatasetNotFound:
        return False
    return True
