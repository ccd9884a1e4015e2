"""State that survives an agent's restart: the replay cache and the operation journal."""

from __future__ import annotations

import pytest

from ployz.agent.errors import AgentTimeout, AgentUnreachable, RemoteError
from ployz.runtime.model import ServiceSpec
from tests.host.agent.agent_process import MACHINE_ID, RawConnection, error_code, signed

pytestmark = pytest.mark.host


def test_request_replayed_after_restart_is_still_refused(agent, operator_key):
    envelope = signed(operator_key)
    first = RawConnection(agent.address)
    assert first.send(envelope)["ok"] is True
    first.close()

    agent.restart()

    again = RawConnection(agent.address)
    try:
        assert error_code(again.send(envelope)) == "auth.replayed"
    finally:
        again.close()


def test_journal_survives_restart(agent):
    client = agent.client()
    with pytest.raises(RemoteError):
        client.call("zfs.snapshot", {"snapshots": ["elsewhere/data@one"]})
    agent.restart()

    [entry] = agent.client().call("agent.operations")
    assert entry["method"] == "zfs.snapshot"
    assert entry["params"] == {"snapshots": ["elsewhere/data@one"]}
    assert entry["status"] == "failed" and entry["error_code"] == "agent.outside-pool"


def test_operation_cut_short_by_a_killed_agent_is_reported_interrupted(agent, dockerd):
    # PID 1 of a container ignores SIGTERM, so stopping it lasts the whole grace period: long
    # enough to kill the agent in the middle of the call.
    spec = ServiceSpec(namespace="restart", service="slow", deploy="d1", image=dockerd.image,
                       command=["sleep", "600"], restart="no")
    client = agent.client()
    client.call("container.create", {"spec": spec.model_dump()})
    client.call("container.start", {"name": spec.container_name})
    stopper = agent.client(timeout_s=0.5)
    with pytest.raises(AgentTimeout):
        stopper.call("container.stop", {"name": spec.container_name, "timeout_s": 20})
    assert [op["method"] for op in client.call("agent.operations", {"status": "running"})] == [
        "container.stop"
    ]

    agent.kill()
    agent.start(agent.address)

    fresh = agent.client()
    [interrupted] = fresh.call("agent.operations", {"status": "interrupted"})
    assert interrupted["method"] == "container.stop"
    assert interrupted["params"]["name"] == spec.container_name
    assert fresh.call("agent.operations", {"status": "running"}) == []
    fresh.call("container.remove", {"name": spec.container_name, "force": True})


def test_agent_stops_cleanly_on_sigterm_with_a_client_connected(agent):
    connected = agent.client()
    connected.call("agent.health")
    assert agent.stop() == 0
    with pytest.raises(AgentUnreachable):
        connected.call("agent.health")


def test_client_reconnects_to_a_restarted_agent(agent):
    client = agent.client()
    client.call("agent.health")
    agent.restart()
    assert client.call("agent.health")["machine_id"] == MACHINE_ID
