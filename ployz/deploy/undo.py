"""The idempotent steps a rollback or a cleanup is made of, shared by every kind of deploy run:
each checks before it acts and returns whether it changed anything, so that running it again
after a crash is harmless and only what it did is reported."""

from __future__ import annotations

from ployz.agent.api import Agent
from ployz.runtime.errors import ContainerNotFound
from ployz.runtime.model import LABEL_DEPLOY, ContainerInfo, service_labels


def other_deploys(agent: Agent, namespace: str, service: str,
                  deploy_id: str) -> list[ContainerInfo]:
    """The service's containers on ``agent`` that belong to other deploys than ``deploy_id``."""
    return [c for c in agent.containers.list(service_labels(namespace, service))
            if c.labels.get(LABEL_DEPLOY) != deploy_id]


def remove_container(agent: Agent, name: str) -> bool:
    try:
        agent.containers.remove(name, force=True)
    except ContainerNotFound:
        return False
    return True


def start_container(agent: Agent, name: str) -> bool:
    """Starts a container that a run stopped, unless it runs already."""
    if agent.containers.inspect(name).state == "running":
        return False
    agent.containers.start(name)
    return True
