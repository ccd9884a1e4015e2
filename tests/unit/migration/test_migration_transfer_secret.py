"""``send_snapshot`` gives both agents the same secret, a fresh one for every transfer: it is what
authenticates the two agents to each other, so it must never be shared between transfers.

The agents are in-memory fakes recording what they were given; the real methods are tested in
tests/host/agent/test_agent_receive.py."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.deploy.migration.snapshot_send import send_snapshot
from ployz.transfer.session import parse_secret
from tests.unit.deploy.fake_agents import FakeCluster


def secrets_of_one_transfer(transfer_id: str) -> tuple[str | None, str | None]:
    cluster = FakeCluster(["machine-a", "machine-b"])
    source, target = cluster.agent_of("machine-a"), cluster.agent_of("machine-b")
    source.zfs.create("machine-a/shop.db")
    source.zfs.snapshot(["machine-a/shop.db@s1"])
    send_snapshot(source, target, Ed25519PrivateKey.generate(), transfer_id=transfer_id,
                  snapshot="machine-a/shop.db@s1", base=None, target_dataset="machine-b/shop.db")
    return (target.machine.secrets[f"receive {transfer_id}"],
            source.machine.secrets[f"send {transfer_id}"])


def test_both_agents_get_the_same_fresh_secret() -> None:
    received, sent = secrets_of_one_transfer("t1")
    assert received is not None and received == sent
    assert len(parse_secret(received)) == 32
    assert secrets_of_one_transfer("t2")[0] != received
