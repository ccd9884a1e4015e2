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

from ployz.agent.api import (
    Agent,
    ReceiveState,
    ReceiveSummary,
    SendStatus,
    SendSummary,
    SetProps,
    int_prop,
)
from ployz.agent.errors import AgentError, UnknownMethod
from ployz.agent.remote import SEND_TIMEOUT_S
from ployz.deploy.errors import DeployError
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign

WAIT_STEP_S = 30.0
WAIT_ROUNDS = 10
POLL_INTERVAL_S = 1.0
"""How often the progress of a running send is asked for."""

@dataclass(frozen=True)
class ProgressSample:
    """Bytes of the stream sent so far, their expected total (None while unknown), bytes per
    second, seconds left (None while unknown)."""

    bytes: int
    total: int | None
    rate: float
    eta_s: float | None


ProgressHandler = Callable[[ProgressSample], None]

log = logging.getLogger(__name__)


class TransferFailed(DeployError):
    """The receiver did not commit the stream."""

    def __init__(self, snapshot: str, target: str, reason: str) -> None:
        self.snapshot = snapshot
        super().__init__(f"sending {snapshot} to {target} failed: {reason}")


@dataclass(frozen=True)
class SnapshotSent:
    """A snapshot the receiver committed: its outcome as the receiver tells it (bytes, time,
    resumes, codec, what it committed), and the guids the ticket bound it to."""

    received: ReceiveSummary
    toguid: int
    fromguid: int | None


def guid_of(agent: Agent, snapshot: str) -> int:
    return int_prop(agent.zfs.get(snapshot, ["guid"]), "guid")


def send_snapshot(
    source: Agent,
    target: Agent,
    key: Ed25519PrivateKey,
    *,
    transfer_id: str,
    snapshot: str,
    base: str | None,
    target_dataset: str,
    total: int | None = None,
    on_progress: ProgressHandler | None = None,
    props: SetProps | None = None,
    bwlimit: float = 0.0,
) -> SnapshotSent:
    """Sends ``snapshot`` (incremental from ``base`` when given) into ``target_dataset``;
    returns once the receiver acknowledged it, raises :class:`TransferFailed` otherwise.

    With ``on_progress``, it is called about once a second while the stream moves, and once at
    100 % when it has; ``total`` (the caller's ``send_space`` estimate) stands in for the
    total while the source agent does not know it. A failing poll or handler never fails the
    send. ``props`` (the volume's quota) are set on the dataset a full send creates;
    ``bwlimit`` caps the send's bytes per second (0: unlimited)."""
    toguid = guid_of(source, snapshot)
    fromguid = guid_of(source, base) if base else None
    secret = new_secret()
    address = target.transfer.receive(transfer_id, target_dataset, props=props,
                                      secret=secret).address
    ticket = sign(Ticket(transfer_id, Target("zfs", target_dataset), time.time() + SEND_TIMEOUT_S,
                         toguid, fromguid), key)

    def send(agent: Agent) -> SendSummary:
        return agent.transfer.send(transfer_id, snapshot, address, ticket, base=base,
                                   secret=secret, bwlimit=bwlimit)

    try:
        if on_progress is None:
            send(source)
        else:
            _send_watched(source, send, transfer_id,
                          _ProgressPoller(source, transfer_id, total, on_progress))
        outcome = _wait_receiver(target, transfer_id)
    except (AgentError, TransferFailed):
        with contextlib.suppress(AgentError):
            target.transfer.receive_cancel(transfer_id)
        raise
    if outcome.state != "committed" or outcome.result is None:
        raise TransferFailed(snapshot, target.address, str(outcome.error))
    committed = outcome.result.committed
    if committed.guid != toguid:
        raise TransferFailed(snapshot, target.address,
                             f"the receiver acknowledged guid {committed.guid}, sent {toguid}")
    return SnapshotSent(outcome.result, toguid, fromguid)


def _send_watched(source: Agent, send: Callable[[Agent], SendSummary], transfer_id: str,
                  poller: _ProgressPoller) -> None:
    """``send(source)`` on a worker thread (``source``'s connection is left to it
    meanwhile) while this thread polls; the send's error, if any, is raised here as it would
    have been by the call itself."""
    outcome: dict[str, Any] = {}
    ended = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = send(source)
        except BaseException as exc:  # handed to the calling thread, which raises it
            outcome["error"] = exc
        finally:
            ended.set()

    worker = threading.Thread(target=run, name=f"send-{transfer_id}", daemon=True)
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
    """Asks the source agent for a send's progress over its own connection (an agent client
    serves one thread) and hands each sample to the handler."""

    def __init__(self, source: Agent, transfer_id: str, total: int | None,
                 handler: ProgressHandler) -> None:
        self.source = source
        self.transfer_id = transfer_id
        self.total = total
        self.handler: ProgressHandler | None = handler
        self.polling = True
        self._agent: Agent | None = None

    def poll(self) -> None:
        if self.handler is None or not self.polling:
            return
        try:
            if self._agent is None:
                self._agent = self.source.fork()
            status = self._agent.transfer.send_status(self.transfer_id)
            sample = progress_sample(status, self.total)
        except UnknownMethod:  # an older agent: only the final sample, from the summary
            log.info("the agent at %s reports no send progress", self.source.address)
            self.polling = False
            return
        except Exception as exc:  # not started yet, a slow answer: the next poll may do
            log.debug("no progress of %s: %s", self.transfer_id, exc)
            return
        self._deliver(sample)

    def finished(self, summary: SendSummary) -> None:
        """The last sample, 100 %, from the send's own summary (no poll needed)."""
        done, seconds = summary.bytes, summary.seconds
        self._deliver(ProgressSample(done, done, done / seconds if seconds > 0 else 0.0, 0.0))

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()

    def _deliver(self, sample: ProgressSample) -> None:
        if self.handler is None:
            return
        try:
            self.handler(sample)
        except Exception:
            log.warning("progress handler failed; no more progress of %s", self.transfer_id,
                        exc_info=True)
            self.handler = None


def progress_sample(status: SendStatus, total: int | None) -> ProgressSample:
    """A send's status as the handler's sample: ``total`` fills in for the agent's unknown
    total (and then gives the ETA), and no total is ever below the bytes done."""
    done = status.bytes
    expected = status.total if status.total is not None else total
    if expected is not None:
        expected = max(expected, done)
    eta = status.eta_s
    if status.finished:
        eta = 0.0
    elif eta is None and expected is not None and status.rate > 0:
        eta = (expected - done) / status.rate
    return ProgressSample(done, expected, status.rate, eta)


def _wait_receiver(target: Agent, transfer_id: str) -> ReceiveState:
    """The receiver's final state (the sender returning does not mean it has committed)."""
    outcome = ReceiveState(state="running", error="no answer")
    for _ in range(WAIT_ROUNDS):
        outcome = target.transfer.receive_wait(transfer_id, timeout_s=WAIT_STEP_S)
        if outcome.state != "running":
            return outcome
    raise TransferFailed(transfer_id, target.address,
                         f"the receiver did not finish within {WAIT_STEP_S * WAIT_ROUNDS:.0f} s "
                         "after the sender")
