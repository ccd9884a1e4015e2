"""How the orchestrator reaches a machine's agent: its overlay address and the agent port.

A machine fact records the overlay address; every agent of a cluster listens on the same port of
its machine's overlay address (7070 unless the cluster says otherwise), so the address follows
from the fact and needs no second source of truth. The orchestrator sees each agent as an
:class:`~ployz.agent.api.Agent`; a unit test hands it fakes through :class:`AgentLookup`.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.api import Agent
from ployz.agent.client import AgentClient
from ployz.agent.remote import RemoteAgent
from ployz.control.models import Machine
from ployz.control.plane import ControlPlane
from ployz.transfer.addresses import format_address

DEFAULT_AGENT_PORT = 7070
ROUTE_WAIT_S = 30.0
"""How long a commit waits for the live machines' agents to apply its routing."""
WRITE_SAMPLE_S = 2.0
"""How long a migration's plan watches the service's writes to measure their rate, and probes
the link meanwhile."""


def agent_address(machine: Machine, port: int = DEFAULT_AGENT_PORT) -> str:
    return format_address(machine.overlay_ip, port)


def machine_map(cp: ControlPlane) -> dict[str, Machine]:
    """Machines by id, as their agents are looked up."""
    return {m.id: m for m in cp.list_machines()}


class AgentLookup(Protocol):
    """The agents of a cluster, and the operator key they trust."""

    @property
    def key(self) -> Ed25519PrivateKey:
        """The operator key; a migration also signs transfer tickets with it."""
        ...

    def agent(self, machine: Machine) -> Agent: ...

    @property
    def route_wait_s(self) -> float:
        """How long a commit waits for these agents to acknowledge its routing."""
        ...

    @property
    def write_sample_s(self) -> float:
        """How long a plan watches a service's writes and probes the link through these agents
        (0: not)."""
        ...

    def fork(self) -> AgentLookup:
        """A lookup with connections of its own, for another thread; close it when done."""
        ...

    def close(self) -> None: ...


class AgentDirectory(AgentLookup):
    """One signed client per machine for the length of a run; close it when done."""

    def __init__(self, key: Ed25519PrivateKey, port: int = DEFAULT_AGENT_PORT,
                 route_wait_s: float = ROUTE_WAIT_S,
                 write_sample_s: float = WRITE_SAMPLE_S) -> None:
        self._key = key
        self._port = port
        self._route_wait_s = route_wait_s
        self._write_sample_s = write_sample_s
        self._agents: dict[str, RemoteAgent] = {}

    @property
    def key(self) -> Ed25519PrivateKey:
        return self._key

    @property
    def route_wait_s(self) -> float:
        return self._route_wait_s

    @property
    def write_sample_s(self) -> float:
        return self._write_sample_s

    def agent(self, machine: Machine) -> RemoteAgent:
        agent = self._agents.get(machine.id)
        if agent is None:
            client = AgentClient(agent_address(machine, self._port), self._key, machine.id)
            agent = self._agents[machine.id] = RemoteAgent(client)
        return agent

    def fork(self) -> AgentDirectory:
        return AgentDirectory(self._key, self._port, self._route_wait_s, self._write_sample_s)

    def close(self) -> None:
        for agent in self._agents.values():
            agent.close()
        self._agents.clear()

    def __enter__(self) -> AgentDirectory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MachineAgents:
    """The agent of each machine the control plane knows, by machine id (read once)."""

    def __init__(self, cp: ControlPlane, agents: AgentLookup) -> None:
        self.machines = machine_map(cp)
        self._agents = agents

    def __call__(self, machine_id: str) -> Agent:
        return self._agents.agent(self.machines[machine_id])
