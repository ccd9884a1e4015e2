"""Fixtures of the agent tests: an operator key and real agent processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.host.agent.agent_process import AgentProcess, RawConnection


@pytest.fixture
def operator_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def start_agent(tmp_path: Path, operator_key: Ed25519PrivateKey):
    """Starts an agent trusting ``operator_key`` with extra command-line arguments."""
    agents: list[AgentProcess] = []

    def start(*extra_args: str) -> AgentProcess:
        agent = AgentProcess(tmp_path / f"state-{len(agents)}", operator_key, list(extra_args))
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.close()


@pytest.fixture
def agent(start_agent, dockerd) -> AgentProcess:
    """An agent on the session's test Docker daemon, managing pool ``tank``."""
    return start_agent("--docker-socket", dockerd.socket, "--pool", "tank")


@pytest.fixture
def raw(agent: AgentProcess) -> Iterator[RawConnection]:
    connection = RawConnection(agent.address)
    yield connection
    connection.close()
