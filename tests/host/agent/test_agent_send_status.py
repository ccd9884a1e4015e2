"""``transfer.send_status`` through a real agent process: asked over its own connection, it is
read-only, and an id the agent sends nothing for is refused with a code a caller can act on."""

from __future__ import annotations

import pytest

from ployz.agent.errors import RemoteError

pytestmark = pytest.mark.host


def test_send_status_of_an_unknown_transfer_is_refused(start_agent) -> None:
    agent = start_agent("--pool", "tank")
    client = agent.client()
    with pytest.raises(RemoteError) as info:
        client.call("transfer.send_status", {"transfer_id": "never-sent"})
    assert info.value.code == "agent.unknown-transfer"
    assert "no send with transfer id 'never-sent'" in str(info.value)
    described = client.call("agent.methods")
    assert described["transfer.send_status"]["mutating"] is False
    # the receive side's refusal keeps its wording
    with pytest.raises(RemoteError, match="no receive with transfer id 'x'"):
        client.call("transfer.receive_wait", {"transfer_id": "x", "timeout_s": 0})
