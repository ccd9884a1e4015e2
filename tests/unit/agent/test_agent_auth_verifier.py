"""RequestVerifier: each refusal reason, with the real SQLite replay cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.auth import AuthFailure, RequestVerifier, sign_request, signing_payload
from ployz.agent.state import AgentState

WINDOW_S = 60


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def state(tmp_path: Path):
    state = AgentState(tmp_path)
    yield state
    state.close()


@pytest.fixture
def verifier(key, state) -> RequestVerifier:
    return RequestVerifier("m1", [key.public_key()], state, window_s=WINDOW_S)


def refusal(verifier: RequestVerifier, envelope: dict, at_ms: int | None = None) -> str:
    with pytest.raises(AuthFailure) as excinfo:
        verifier.verify(envelope, envelope.get("ts_ms", 0) if at_ms is None else at_ms)
    return excinfo.value.reason


def resigned(key, envelope: dict, **changes) -> dict:
    envelope = {**envelope, **changes}
    envelope["sig"] = key.sign(signing_payload(envelope)).hex()
    return envelope


def test_valid_request_passes(verifier, key):
    envelope = sign_request(key, "m1", "zfs.snapshot", {"snapshots": ["tank/a@1"]})
    verifier.verify(envelope, envelope["ts_ms"] + 1000)


@pytest.mark.parametrize("missing", ["sig", "nonce", "ts_ms", "key", "audience", "params"])
def test_missing_field_is_unsigned(verifier, key, missing):
    envelope = sign_request(key, "m1", "agent.health", {})
    del envelope[missing]
    assert refusal(verifier, envelope, 0) == "unsigned"


def test_boolean_timestamp_is_unsigned(verifier, key):
    assert refusal(verifier, resigned(key, sign_request(key, "m1", "x", {}), ts_ms=True)) == (
        "unsigned"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"method": "zfs.rollback"},
        {"params": {"dataset": "tank/other"}},
        {"audience": "m2"},
        {"nonce": "00" * 16},
        {"ts_ms": 1},
    ],
)
def test_any_change_after_signing_breaks_the_signature(verifier, key, change):
    envelope = sign_request(key, "m1", "zfs.destroy", {"dataset": "tank/a"})
    assert refusal(verifier, {**envelope, **change}, envelope["ts_ms"]) == "bad-signature"


def test_garbage_signature_is_bad_signature(verifier, key):
    envelope = {**sign_request(key, "m1", "agent.health", {}), "sig": "zz"}
    assert refusal(verifier, envelope) == "bad-signature"


def test_stranger_key_is_untrusted(verifier):
    envelope = sign_request(Ed25519PrivateKey.generate(), "m1", "agent.health", {})
    assert refusal(verifier, envelope) == "untrusted-key"


def test_malformed_key_text_is_unsigned(verifier, key):
    envelope = {**sign_request(key, "m1", "agent.health", {}), "key": "ed25519:!!"}
    assert refusal(verifier, envelope) == "unsigned"


def test_other_audience_is_refused(verifier, key):
    assert refusal(verifier, sign_request(key, "m2", "agent.health", {})) == "wrong-audience"


@pytest.mark.parametrize("skew_s", [WINDOW_S + 1, -(WINDOW_S + 1)])
def test_timestamp_outside_window_is_expired(verifier, key, skew_s):
    envelope = sign_request(key, "m1", "agent.health", {})
    assert refusal(verifier, envelope, envelope["ts_ms"] + skew_s * 1000) == "expired"


def test_timestamp_at_window_edge_is_accepted(verifier, key):
    envelope = sign_request(key, "m1", "agent.health", {})
    verifier.verify(envelope, envelope["ts_ms"] + WINDOW_S * 1000)


def test_replay_is_refused_even_after_reopening_the_state(key, tmp_path: Path):
    envelope = sign_request(key, "m1", "agent.health", {})
    first = AgentState(tmp_path)
    RequestVerifier("m1", [key.public_key()], first, WINDOW_S).verify(envelope, envelope["ts_ms"])
    first.close()

    reopened = AgentState(tmp_path)
    verifier = RequestVerifier("m1", [key.public_key()], reopened, WINDOW_S)
    assert refusal(verifier, envelope, envelope["ts_ms"] + 10) == "replayed"
    reopened.close()


def test_several_keys_can_be_trusted(state, key):
    other = Ed25519PrivateKey.generate()
    verifier = RequestVerifier("m1", [key.public_key(), other.public_key()], state, WINDOW_S)
    for signer in (key, other):
        envelope = sign_request(signer, "m1", "agent.health", {})
        verifier.verify(envelope, envelope["ts_ms"])
