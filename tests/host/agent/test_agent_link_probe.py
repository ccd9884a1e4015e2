"""A probe of the link between two agents: a real transfer of random bytes for a few seconds into
nothing, authorised and authenticated as every transfer is, refused where a probe is not what
the receiver serves, and failing into "no probe" rather than into a failed plan.

Two real agent processes over loopback for the probe as the orchestrator takes it; the agent's
own methods for the refusals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.context import AgentContext
from ployz.agent.errors import RemoteError
from ployz.agent.methods.transfers import TransferMethods
from ployz.agent.remote import RemoteAgent
from ployz.deploy.migration.link_probe import BackgroundProbe, ProbeFailed, probe_between
from ployz.transfer.errors import Refused
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.probe import MAX_PROBE_S
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign

pytestmark = pytest.mark.host


def methods(tmp_path: Path, trusted: Ed25519PrivateKey) -> TransferMethods:
    """An agent's transfer methods whose datasets ``tank/NAME`` are files ``tmp_path/NAME``."""
    context = AgentContext(machine_id="machine-b", pool="tank", runtime=None,  # type: ignore[arg-type]
                           state=None, started_ms=0,  # type: ignore[arg-type]
                           address="127.0.0.1:0", trusted=(trusted.public_key(),))
    return TransferMethods(context, source_for=lambda snapshot, base: FileSource(
                               tmp_path / snapshot.removeprefix("tank/").split("@")[0]),
                           sink_for=lambda dataset, pool, props: FileSink(
                               tmp_path / dataset.removeprefix("tank/")))


def probe_ticket(transfer_id: str, key: Ed25519PrivateKey) -> str:
    return sign(Ticket(transfer_id, Target("probe", transfer_id), time.time() + 60), key)


def test_a_probe_between_two_agents_measures_the_link_and_keeps_nothing(
        start_agent, operator_key: Ed25519PrivateKey) -> None:
    source = RemoteAgent(start_agent("--pool", "tank").client())
    target_process = start_agent("--pool", "tank")
    target = RemoteAgent(target_process.client())

    probe = probe_between(source, target, operator_key, seconds=1.0)

    # it sent for its second (the handshake and the acknowledgement come on top)
    assert probe.seconds >= 1.0
    assert probe.bytes > 1 << 20 and probe.bytes_per_s == probe.bytes / probe.seconds
    # nothing of it stays on the target: no file beside the agent's state, nothing journaled
    assert not any(p.is_file() and p.stat().st_size >= probe.bytes
                   for p in target_process.state_dir.rglob("*"))
    journaled = target_process.client().call("agent.operations", {"limit": 5})
    assert all(not op["method"].startswith("transfer.probe") for op in journaled), journaled


def test_a_probe_the_receiver_does_not_trust_fails_as_no_probe(
        start_agent, operator_key: Ed25519PrivateKey) -> None:
    source = RemoteAgent(start_agent("--pool", "tank").client())
    target = RemoteAgent(start_agent("--pool", "tank").client())
    stranger = Ed25519PrivateKey.generate()

    with pytest.raises(ProbeFailed, match="not signed by any trusted key"):
        probe_between(source, target, stranger, seconds=1.0)
    # and taken beside a plan's write sample, the plan goes on without it
    assert BackgroundProbe(source, target, stranger, 1.0).result() is None


def test_a_probe_ticket_opens_no_dataset_and_a_dataset_ticket_feeds_no_probe(
        tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    target, source = methods(tmp_path, key), methods(tmp_path, key)
    (tmp_path / "vol").write_bytes(b"volume data " * 10_000)

    # a probe's ticket presented to a receiver writing a dataset
    secret = new_secret()
    address = target.receive("t1", "tank/copy", secret=secret).address
    with pytest.raises(Exception, match="ticket names probe"):
        source.probe_send("t1", address, probe_ticket("t1", key), secret, 0.5)
    target.receive_cancel("t1")
    assert not (tmp_path / "copy").exists()

    # a dataset's ticket (and its stream) presented to a probe receiver
    secret = new_secret()
    address = target.probe_receive("t2", secret).address
    dataset_ticket = sign(Ticket("t2", Target("file", str(tmp_path / "copy")),
                                 time.time() + 60), key)
    with pytest.raises(Exception, match="ticket names file"):
        source.send("t2", "tank/vol@s1", address, dataset_ticket, secret=secret)
    target.receive_cancel("t2")
    assert not (tmp_path / "copy").exists()


def test_a_probe_longer_than_the_bound_is_refused_before_it_connects(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    source = methods(tmp_path, key)
    with pytest.raises(Refused, match=f"at most {MAX_PROBE_S:.0f} s"):
        source.probe_send("t1", "127.0.0.1:9", probe_ticket("t1", key), new_secret(),
                          MAX_PROBE_S * 6)


def test_a_probe_needs_a_well_formed_secret(start_agent) -> None:
    client = start_agent("--pool", "tank").client()
    with pytest.raises(RemoteError) as info:
        client.call("transfer.probe_receive", {"transfer_id": "t1", "secret": "no"})
    assert info.value.code == "agent.bad-secret"
