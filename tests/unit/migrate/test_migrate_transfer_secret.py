"""``send_snapshot`` gives both agents the same secret, a fresh one for every transfer: it is what
authenticates the two agents to each other, so it must never be shared between transfers.

The agents are small fakes recording what they were asked; the real methods are tested in
tests/host/agent/test_agent_receive.py."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.deploy.migration.transfer import send_snapshot
from ployz.transfer.session import parse_secret

GUID = 1234
SUMMARY = {"bytes": 10, "wire_bytes": 10, "seconds": 1.0, "resumes": 0, "codec": "none",
           "committed": {"guid": GUID}}


class Agent:
    address = "10.210.0.3:7070"

    def __init__(self) -> None:
        self.params: dict[str, dict[str, Any]] = {}

    def call(self, method: str, params: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        self.params[method] = params
        return {
            "zfs.get": {"guid": GUID},
            "transfer.receive": {"address": "10.210.0.3:40000"},
            "transfer.send": SUMMARY,
            "transfer.receive_wait": {"state": "committed", "error": None, "result": SUMMARY},
        }[method]


def secrets_of_one_transfer(transfer_id: str) -> tuple[str, str]:
    source, target = Agent(), Agent()
    send_snapshot(source, target, Ed25519PrivateKey.generate(),  # type: ignore[arg-type]
                  transfer_id=transfer_id, snapshot="machine-a/shop.db@s1", base=None,
                  target_dataset="machine-b/shop.db")
    return target.params["transfer.receive"]["secret"], source.params["transfer.send"]["secret"]


def test_both_agents_get_the_same_fresh_secret() -> None:
    received, sent = secrets_of_one_transfer("t1")
    assert received == sent
    assert len(parse_secret(received)) == 32
    assert secrets_of_one_transfer("t2")[0] != received
