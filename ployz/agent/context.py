"""What the agent's methods share: its identity, its pool, its Docker daemon and its state."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ployz.agent.state import AgentState
from ployz.runtime.docker_runtime import DockerRuntime


@dataclass
class AgentContext:
    machine_id: str
    pool: str | None
    runtime: DockerRuntime
    state: AgentState
    started_ms: int
    address: str = ""
    """``host:port`` the agent listens on; known once the listening socket is bound."""
    trusted: tuple[Ed25519PublicKey, ...] = ()
    """Keys whose signatures the agent accepts, for requests and for transfer tickets alike."""
