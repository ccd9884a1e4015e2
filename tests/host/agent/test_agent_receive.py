"""The agent's receives: authenticated by the transfer's secret and a ticket of any trusted key,
cancellable whatever their state, and forgotten a grace period after they ended (an agent runs
for months; receives must not pile up).

The first tests run the agent's own methods over loopback with real receivers and senders, on
files instead of ZFS (the only thing that differs on a machine) and with a clock the test moves;
the last ones ask a real agent process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.context import AgentContext
from ployz.agent.errors import RemoteError, SecretMismatch, UnknownTransfer
from ployz.agent.methods.transfers import RECEIVE_STATE_GRACE_S, TransferMethods
from ployz.agent.remote import RemoteAgent
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign

pytestmark = pytest.mark.host

PROMPT_S = 3.0
"""A cancelled receiver stops within a second; the rest is the test machine's slack."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def agent_methods(tmp_path: Path, trusted: list[Ed25519PrivateKey], clock: Clock,
                  source: Path | None = None) -> TransferMethods:
    """An agent's transfer methods whose datasets ``tank/NAME`` are files ``tmp_path/NAME``."""
    context = AgentContext(machine_id="machine-b", pool="tank", runtime=None,  # type: ignore[arg-type]
                           state=None, started_ms=0,  # type: ignore[arg-type]
                           address="127.0.0.1:0", trusted=tuple(k.public_key() for k in trusted))
    return TransferMethods(context, source_for=lambda snapshot, base: FileSource(source),
                           sink_for=lambda dataset, pool, props: FileSink(
                               tmp_path / dataset.removeprefix("tank/")),
                           clock=clock)


def ticket(transfer_id: str, dst: Path, key: Ed25519PrivateKey) -> str:
    return sign(Ticket(transfer_id, Target("file", str(dst.absolute())), time.time() + 60,
                       None, None), key)


def test_a_ticket_of_the_second_trusted_key_is_accepted_and_the_outcome_kept_for_a_while(
        tmp_path: Path) -> None:
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    src = tmp_path / "src"
    src.write_bytes(b"volume data " * 100_000)
    clock = Clock()
    target = agent_methods(tmp_path, [first, second], clock)
    source = agent_methods(tmp_path, [first], clock, source=src)
    secret = new_secret()

    address = target.receive("t1", "tank/vol", secret=secret).address
    sent = source.send("t1", "tank/vol@s1", address, ticket("t1", tmp_path / "vol", second),
                       secret=secret)
    assert sent.bytes == src.stat().st_size
    state = target.receive_wait("t1", timeout_s=10)
    assert state.state == "committed", state
    assert (tmp_path / "vol").read_bytes() == src.read_bytes()

    clock.now += RECEIVE_STATE_GRACE_S - 1  # the orchestrator's wait after the send sees it
    assert target.receive_wait("t1", timeout_s=0) == state
    clock.now += 2
    with pytest.raises(UnknownTransfer):
        target.receive_wait("t1", timeout_s=0)


def test_cancel_stops_an_idle_receive_which_is_forgotten_after_the_grace(tmp_path: Path) -> None:
    clock = Clock()
    methods = agent_methods(tmp_path, [Ed25519PrivateKey.generate()], clock)
    methods.receive("t1", "tank/vol", secret=new_secret())
    assert methods.receive_wait("t1", timeout_s=0).state == "running"

    started = time.monotonic()
    cancelled = methods.receive_cancel("t1")
    assert time.monotonic() - started < PROMPT_S
    assert cancelled.state == "failed" and "cancelled" in str(cancelled.error), cancelled
    assert methods.receive_wait("t1", timeout_s=0) == cancelled
    assert not (tmp_path / "vol").exists()

    clock.now += RECEIVE_STATE_GRACE_S + 1
    with pytest.raises(UnknownTransfer):
        methods.receive_wait("t1", timeout_s=0)


def test_a_running_receive_is_only_handed_again_to_its_own_secret(tmp_path: Path) -> None:
    methods = agent_methods(tmp_path, [Ed25519PrivateKey.generate()], Clock())
    secret = new_secret()
    address = methods.receive("t1", "tank/vol", secret=secret).address
    try:
        assert methods.receive("t1", "tank/vol", secret=secret.upper()).address == address
        for other in (new_secret(), None):
            with pytest.raises(SecretMismatch, match="another secret"):
                methods.receive("t1", "tank/vol", secret=other)
        assert methods.receive_wait("t1", timeout_s=0).state == "running"
    finally:
        methods.receive_cancel("t1")


def test_a_malformed_secret_is_refused_before_anything_starts(start_agent) -> None:
    client = start_agent("--pool", "tank").client()
    malformed = "not-hex-" * 8
    for method, params in (
            ("transfer.receive", {"dataset": "tank/vol"}),
            ("transfer.send", {"snapshot": "tank/vol@s1", "to": "127.0.0.1:9", "ticket": "x"})):
        with pytest.raises(RemoteError) as info:
            client.call(method, {"transfer_id": "t1", "secret": malformed, **params})
        assert info.value.code == "agent.bad-secret"
        assert "64 hex digits" in info.value.message and malformed not in info.value.message
    for method in ("transfer.receive_wait", "transfer.send_status"):
        with pytest.raises(RemoteError) as info:
            client.call(method, {"transfer_id": "t1"})
        assert info.value.code == "agent.unknown-transfer"


def test_an_idle_receive_is_cancelled_through_the_agent(start_agent) -> None:
    client = start_agent("--pool", "tank").client()
    agent = RemoteAgent(client)
    secret = new_secret()
    agent.transfer.receive("t1", "tank/vol", secret=secret)
    [journaled] = client.call("agent.operations", {"limit": 1})
    assert journaled["method"] == "transfer.receive"
    assert secret not in str(journaled) and "(secret)" in str(journaled), journaled
    started = time.monotonic()
    cancelled = agent.transfer.receive_cancel("t1")
    assert time.monotonic() - started < PROMPT_S
    assert cancelled.state == "failed" and "cancelled" in str(cancelled.error), cancelled
    assert agent.transfer.receive_wait("t1", timeout_s=0) == cancelled
