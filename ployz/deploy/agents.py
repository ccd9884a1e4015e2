"""How the orchestrator reaches a machine's agent: its overlay address and the agent port.

A machine fact records the overlay address; every agent of a cluster listens on the same port of
its machine's overlay address (7070 unless the cluster says otherwise), so the address follows
from the fact and needs no second source of truth.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.client import AgentClient
from ployz.agent.protocol import format_address
from ployz.control.models import Machine

DEFAULT_AGENT_PORT = 7070


def agent_address(machine: Machine, port: int = DEFAULT_AGENT_PORT) -> str:
    return format_address(machine.overlay_ip, port)


class AgentDirectory:
    """One signed client per machine for the length of a deploy; close it when done."""

    def __init__(self, key: Ed25519PrivateKey, port: int = DEFAULT_AGENT_PORT) -> None:
        self._key = key
        self._port = port
        self._clients: dict[str, AgentClient] = {}

    @property
    def key(self) -> Ed25519PrivateKey:
        """The operator key the agents trust; a migration also signs transfer tickets with it."""
        return self._key

    def client(self, machine: Machine) -> AgentClient:
        client = self._clients.get(machine.id)
        if client is None:
            client = AgentClient(agent_address(machine, self._port), self._key, machine.id)
            self._clients[machine.id] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> AgentDirectory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
