"""One snapshot sent from the source machine's agent to the target machine's agent.

The orchestrator never touches the data: it asks the target agent to start a receiver for the
transfer, signs a ticket with the operator key (which the agents trust) binding the transfer id,
the target dataset and the snapshot guids, has the source agent send, and reads the receiver's
acknowledgement, which is the evidence the commit records. It also chooses a fresh secret for
each transfer and gives it to both agents over their authenticated RPC: proving it to each other
is how the two agents authenticate, since neither holds the operator key.

``transfer.send`` blocks until the receiver committed, hours for a large volume. When the caller
wants progress, that call runs on a worker thread while the calling thread asks the source agent
for the send's progress (``transfer.send_status``) about once a second over a second connection.
Progress is only ever informative: a poll that fails is skipped, and the send's own outcome is
what decides.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.client import AgentClient
from ployz.agent.errors import AgentError, UnknownMethod
from ployz.deploy.errors import DeployError
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign

SEND_TIMEOUT_S = 24 * 3600.0
"""How long the blocking ``transfer.send`` call may take (it resumes across broken
connections on its own); the ticket is valid as long."""
WAIT_STEP_S = 30.0
WAIT_ROUNDS = 10
POLL_INTERVAL_S = 1.0
"""How often the progress of a running send is asked for."""
STATUS_TIMEOUT_S = 5.0
"""How long one progress poll may wait: short, since the send may end meanwhile."""

ProgressHandler = Callable[[dict[str, Any]], None]
"""Called with ``{"bytes": int, "total": int | None, "rate": float, "eta_s": float | None}``:
bytes of the stream sent so far, their expected total, bytes per second, seconds left."""

log = logging.getLogger(__name__)


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
    total: int | None = None,
    on_progress: ProgressHandler | None = None,
    props: dict[str, int | str] | None = None,
) -> SendResult:
    """Sends ``snapshot`` (incremental from ``base`` when given) into ``target_dataset``;
    returns once the receiver acknowledged it, raises :class:`TransferFailed` otherwise.

    With ``on_progress``, it is called about once a second while the stream moves, and once at
    100 % when it has; ``total`` (the caller's ``send_space`` estimate) stands in for the
    total while the source agent does not know it. A failing poll or handler never fails the
    send. ``props`` (the volume's quota) are set on the dataset a full send creates."""
    toguid = guid_of(source, snapshot)
    fromguid = guid_of(source, base) if base else None
    secret = new_secret()
    address = target.call("transfer.receive", {"transfer_id": transfer_id,
                                               "dataset": target_dataset,
                                               "props": props, "secret": secret})["address"]
    ticket = sign(Ticket(transfer_id, Target("zfs", target_dataset), time.time() + SEND_TIMEOUT_S,
                         toguid, fromguid), key)
    params = {"transfer_id": transfer_id, "snapshot": snapshot, "to": address, "ticket": ticket,
              "base": base, "secret": secret}
    try:
        if on_progress is None:
            source.call("transfer.send", params, timeout_s=SEND_TIMEOUT_S)
        else:
            _send_watched(source, params, _ProgressPoller(source, transfer_id, total,
                                                          on_progress))
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


def _send_watched(source: AgentClient, params: dict[str, Any],
                  poller: _ProgressPoller) -> None:
    """``transfer.send`` on a worker thread (through ``source``, which this thread leaves
    alone meanwhile) while this thread polls; the send's error, if any, is raised here as it
    would have been by the call itself."""
    outcome: dict[str, Any] = {}
    ended = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = source.call("transfer.send", params, timeout_s=SEND_TIMEOUT_S)
        except BaseException as exc:  # handed to the calling thread, which raises it
            outcome["error"] = exc
        finally:
            ended.set()

    worker = threading.Thread(target=run, name=f"send-{params['transfer_id']}", daemon=True)
    worker.start()
    try:
        while not ended.wait(POLL_INTERVAL_S):
            poller.poll()
    finally:
        poller.close()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    poller.finished(outcome["result"])


class _ProgressPoller:
    """Asks the source agent for a send's progress over its own connection (an
    :class:`AgentClient` serves one thread) and hands each sample to the handler."""

    def __init__(self, source: AgentClient, transfer_id: str, total: int | None,
                 handler: ProgressHandler) -> None:
        self.source = source
        self.transfer_id = transfer_id
        self.total = total
        self.handler: ProgressHandler | None = handler
        self.polling = True
        self._client: AgentClient | None = None

    def poll(self) -> None:
        if self.handler is None or not self.polling:
            return
        try:
            if self._client is None:
                self._client = self.source.fork()
            status = self._client.call("transfer.send_status", {"transfer_id": self.transfer_id},
                                       timeout_s=STATUS_TIMEOUT_S)
            sample = progress_sample(status, self.total)
        except UnknownMethod:  # an older agent: only the final sample, from the summary
            log.info("the agent at %s reports no send progress", self.source.address)
            self.polling = False
            return
        except Exception as exc:  # not started yet, a slow answer: the next poll may do
            log.debug("no progress of %s: %s", self.transfer_id, exc)
            return
        self._deliver(sample)

    def finished(self, summary: dict[str, Any]) -> None:
        """The last sample, 100 %, from the send's own summary (no poll needed)."""
        done, seconds = int(summary["bytes"]), float(summary["seconds"])
        self._deliver({"bytes": done, "total": done,
                       "rate": done / seconds if seconds > 0 else 0.0, "eta_s": 0.0})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _deliver(self, sample: dict[str, Any]) -> None:
        if self.handler is None:
            return
        try:
            self.handler(sample)
        except Exception:
            log.warning("progress handler failed; no more progress of %s", self.transfer_id,
                        exc_info=True)
            self.handler = None


def progress_sample(status: dict[str, Any], total: int | None) -> dict[str, Any]:
    """A ``transfer.send_status`` answer as the handler's sample: ``total`` fills in for the
    agent's unknown total (and then gives the ETA), and no total is ever below the bytes done."""
    done = int(status["bytes"])
    known = status.get("total")
    expected = int(known) if known is not None else total
    if expected is not None:
        expected = max(expected, done)
    rate = float(status.get("rate") or 0.0)
    eta = status.get("eta_s")
    if status.get("finished"):
        eta = 0.0
    elif eta is None and expected is not None and rate > 0:
        eta = (expected - done) / rate
    return {"bytes": done, "total": expected, "rate": rate,
            "eta_s": None if eta is None else float(eta)}


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
