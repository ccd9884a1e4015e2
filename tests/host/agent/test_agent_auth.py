"""What a real agent accepts and refuses, over its TCP socket."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.errors import AuthRefused
from ployz.agent.protocol import IDENTIFY
from tests.host.agent.agent_process import MACHINE_ID, error_code, signed

pytestmark = pytest.mark.host


def test_signed_request_is_answered(agent):
    health = agent.client().call("agent.health")
    assert health["machine_id"] == MACHINE_ID
    assert health["address"] == agent.address
    assert "container.create" in health["methods"] and "zfs.snapshot" in health["methods"]
    described = agent.client().call("agent.methods")
    assert sorted(described) == health["methods"]
    assert described["zfs.snapshot"]["mutating"] is True
    assert "spec" in described["container.create"]["params"]["properties"]


def test_identify_needs_no_signature_and_reveals_only_the_machine_id(raw):
    response = raw.send({"id": 1, "method": IDENTIFY})
    assert response == {"id": 1, "ok": True, "result": {"machine_id": MACHINE_ID}}


def test_unsigned_request_is_refused(raw):
    response = raw.send({"id": 1, "method": "agent.health", "params": {}})
    assert error_code(response) == "auth.unsigned"
    assert "sig" in response["error"]["message"]


def test_tampered_request_is_refused(raw, operator_key):
    envelope = signed(operator_key, "zfs.destroy", {"dataset": "tank/a"})
    envelope["params"] = {"dataset": "tank/important"}
    assert error_code(raw.send(envelope)) == "auth.bad-signature"


def test_replayed_request_is_refused(raw, operator_key):
    envelope = signed(operator_key)
    assert raw.send(envelope)["ok"] is True
    response = raw.send(envelope)
    assert error_code(response) == "auth.replayed"
    assert envelope["nonce"] in response["error"]["message"]


@pytest.mark.parametrize("offset_s", [-600, 600])
def test_request_outside_the_time_window_is_refused(raw, operator_key, offset_s):
    envelope = signed(operator_key)
    envelope = signed(operator_key, ts_ms=envelope["ts_ms"] + offset_s * 1000)
    response = raw.send(envelope)
    assert error_code(response) == "auth.expired"
    assert "window" in response["error"]["message"]


def test_request_signed_by_an_untrusted_key_is_refused(agent):
    stranger = agent.client(Ed25519PrivateKey.generate())
    with pytest.raises(AuthRefused) as excinfo:
        stranger.call("agent.health")
    assert excinfo.value.reason == "untrusted-key"


def test_request_meant_for_another_machine_is_refused(raw, operator_key):
    envelope = signed(operator_key, audience="machine-b")
    response = raw.send(envelope)
    assert error_code(response) == "auth.wrong-audience"
    assert "machine-b" in response["error"]["message"]


def test_refused_request_leaves_the_connection_usable(raw, operator_key):
    assert error_code(raw.send({"id": 1, "method": "agent.health", "params": {}}))
    assert raw.send(signed(operator_key))["ok"] is True


def test_garbage_frame_gets_a_protocol_error(raw):
    assert error_code(raw.send_bytes(b"\x00\x00\x00\x05hello")) == "rpc.bad-request"
