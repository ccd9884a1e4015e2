"""One snapshot sent from the source machine's agent to the target machine's agent.

The orchestrator never touches the data: it asks the target agent to start a receiver for the
transfer, signs a ticket with the operator key (which the agents trust) binding the transfer id,
the target dataset and the snapshot guids, has the source agent send, and reads the receiver's
acknowledgement, which is the evidence the commit records.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.client import AgentClient
from ployz.agent.errors import AgentError
from ployz.deploy.errors import DeployError
from ployz.transfer.tickets import Target, Ticket, sign

SEND_TIMEOUT_S = 24 * 3600.0
"""How long the blocking ``transfer.send`` call may take (it resumes across broken
connections on its own); the ticket is valid as long."""
WAIT_STEP_S = 30.0
WAIT_ROUNDS = 10


class TransferFailed(DeployError):
    """The receiver did not commit the stream."""

    def __init__(self, snapshot: str, target: str, reason: str) -> None:
        self.snapshot = snapshot
        super().__init__(f"sending {snapshot} to {target} failed: {reason}")


@dataclass(frozen=True)
class SendResult:
    bytes: int
    wire_bytes: int
    seconds: float
    resumes: int
    codec: str
    committed: dict[str, Any]
    """The receiver's acknowledgement: kind, snapshot, guid, size, checksum."""


def guid_of(client: AgentClient, snapshot: str) -> int:
    return int(client.call("zfs.get", {"name": snapshot, "props": ["guid"]})["guid"])


def send_snapshot(
    source: AgentClient,
    target: AgentClient,
    key: Ed25519PrivateKey,
    *,
    transfer_id: str,
    snapshot: str,
    base: str | None,
    target_dataset: str,
) -> SendResult:
    """Sends ``snapshot`` (incremental from ``base`` when given) into ``target_dataset``;
    returns once the receiver acknowledged it, raises :class:`TransferFailed` otherwise."""
    toguid = guid_of(source, snapshot)
    fromguid = guid_of(source, base) if base else None
    address = target.call("transfer.receive",
                          {"transfer_id": transfer_id, "dataset": target_dataset})["address"]
    ticket = sign(Ticket(transfer_id, Target("zfs", target_dataset), time.time() + SEND_TIMEOUT_S,
                         toguid, fromguid), key)
    try:
        source.call("transfer.send", {"transfer_id": transfer_id, "snapshot": snapshot,
                                      "to": address, "ticket": ticket, "base": base},
                    timeout_s=SEND_TIMEOUT_S)
        outcome = _wait_receiver(target, transfer_id)
    except (AgentError, TransferFailed):
        with contextlib.suppress(AgentError):
            target.call("transfer.receive_cancel", {"transfer_id": transfer_id})
        raise
    if outcome["state"] != "committed" or not outcome.get("result"):
        raise TransferFailed(snapshot, target.address, str(outcome.get("error")))
    result = outcome["result"]
    committed = result["committed"]
    if int(committed["guid"]) != toguid:
        raise TransferFailed(snapshot, target.address,
                             f"the receiver acknowledged guid {committed['guid']}, sent {toguid}")
    return SendResult(int(result["bytes"]), int(result["wire_bytes"]), float(result["seconds"]),
                      int(result["resumes"]), str(result["codec"]), committed)


def _wait_receiver(target: AgentClient, transfer_id: str) -> dict[str, Any]:
    """The receiver's final state (the sender returning does not mean it has committed)."""
    outcome: dict[str, Any] = {"state": "running", "error": "no answer"}
    for _ in range(WAIT_ROUNDS):
        outcome = target.call("transfer.receive_wait",
                              {"transfer_id": transfer_id, "timeout_s": WAIT_STEP_S},
                              timeout_s=WAIT_STEP_S + 30)
        if outcome["state"] != "running":
            return outcome
    raise TransferFailed(transfer_id, target.address,
                         f"the receiver did not finish within {WAIT_STEP_S * WAIT_ROUNDS:.0f} s "
                         "after the sender")
