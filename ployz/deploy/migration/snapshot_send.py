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

A send survives interruptions that lose nothing, up to :data:`MAX_INTERRUPTIONS`: an agent that
restarts (its connection drops, or its receiver is gone), a connection the sender gave up on,
and a send that stalls (no byte acknowledged for :data:`STALL_S`: its receiver is cancelled,
which keeps the partial receive). It waits for both agents to answer again (at most
:data:`RESTART_WAIT_S`), starts the receiver anew if it is gone, the new one offering the resume
token ZFS kept, and sends again, which resumes there: only what followed the last resume point
travels twice. Every interruption is reported to ``on_interruption``, with the bytes the
interrupted attempt had sent. Any other failure cancels the receiver and is raised.
"""

from __future__ import annotations

import contextlib
import functools
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
from ployz.agent.errors import AgentError, AgentUnreachable, UnknownMethod, UnknownTransfer
from ployz.agent.remote import SEND_TIMEOUT_S
from ployz.deploy.errors import DeployError
from ployz.transfer.errors import ConnectionLost, RetriesExhausted
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign

WAIT_STEP_S = 30.0
WAIT_ROUNDS = 10
MAX_INTERRUPTIONS = 5
"""Interruptions one send survives; the next one fails it."""
RESTART_WAIT_S = 300.0
"""How long an interrupted send waits for its agents to answer again."""
STALL_S = 60.0
"""A send whose acknowledged bytes do not advance for this long is cut and resumed."""
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
    limit_group: str | None = None,
    on_interruption: Callable[[str, int | None], None] | None = None,
    stall_s: float = STALL_S,
) -> SnapshotSent:
    """Sends ``snapshot`` (incremental from ``base`` when given) into ``target_dataset``;
    returns once the receiver acknowledged it, raises :class:`TransferFailed` otherwise.

    With ``on_progress``, it is called about once a second while the stream moves, and once at
    100 % when it has; ``total`` (the caller's ``send_space`` estimate) stands in for the
    total while the source agent does not know it. A failing poll or handler never fails the
    send. ``props`` (the volume's quota) are set on the dataset a full send creates;
    ``bwlimit`` caps the send's bytes per second (0: unlimited), or with ``limit_group``
    those of all the group's sends on the source agent together."""
    toguid = guid_of(source, snapshot)
    fromguid = guid_of(source, base) if base else None
    secret = new_secret()
    ticket = sign(Ticket(transfer_id, Target("zfs", target_dataset), time.time() + SEND_TIMEOUT_S,
                         toguid, fromguid), key)

    def send(agent: Agent, address: str) -> SendSummary:
        return agent.transfer.send(transfer_id, snapshot, address, ticket, base=base,
                                   secret=secret, bwlimit=bwlimit, limit_group=limit_group)

    address: str | None = None
    interruptions = 0
    while True:
        try:
            if address is None:
                address = target.transfer.receive(transfer_id, target_dataset, props=props,
                                                  secret=secret).address
            to = address
            if on_progress is None:
                send(source, to)
            else:
                _send_watched(source, functools.partial(send, address=to), transfer_id,
                              _ProgressPoller(source, transfer_id, total, on_progress),
                              _Stall(target, transfer_id, stall_s))
            outcome = _wait_receiver(target, transfer_id)
            break
        except (AgentError, TransferFailed) as exc:
            reason = interruption(exc)
            if reason is None or interruptions >= MAX_INTERRUPTIONS:
                with contextlib.suppress(AgentError):
                    target.transfer.receive_cancel(transfer_id)
                raise
            interruptions += 1
            log.warning("send of %s interrupted (%s); resuming (%d of %d)", snapshot, reason,
                        interruptions, MAX_INTERRUPTIONS)
            if on_interruption is not None:
                on_interruption(reason, _sent_so_far(source, transfer_id))
            _wait_answering(source)
            _wait_answering(target)
            state = _receive_state(target, transfer_id)
            if state is not None and state.state == "committed":
                outcome = state
                break
            if state is None or state.state != "running":
                address = None  # gone with its agent, or cut: a new receiver resumes it
    if outcome.state != "committed" or outcome.result is None:
        raise TransferFailed(snapshot, target.address, str(outcome.error))
    committed = outcome.result.committed
    if committed.guid != toguid:
        raise TransferFailed(snapshot, target.address,
                             f"the receiver acknowledged guid {committed.guid}, sent {toguid}")
    return SnapshotSent(outcome.result, toguid, fromguid)


def interruption(error: BaseException) -> str | None:
    """Why ``error`` is an interruption a resumed send recovers from, or None when it is a
    failure: an agent out of reach (restarting), a connection the sender gave up on, a stall
    cut."""
    if isinstance(error, Stalled):
        return str(error)
    if isinstance(error, AgentUnreachable):
        return f"agent out of reach: {error}"
    if isinstance(error, (ConnectionLost, RetriesExhausted, UnknownTransfer)):
        return f"the connection to the receiver was lost: {error}"
    return None


def _sent_so_far(source: Agent, transfer_id: str) -> int | None:
    """The bytes the interrupted send had sent, as its agent last counted them (None when the
    agent is away, or restarted and forgot)."""
    try:
        return source.transfer.send_status(transfer_id).bytes
    except AgentError:
        return None


def _wait_answering(agent: Agent) -> None:
    """Until ``agent`` answers again (a restart), at most :data:`RESTART_WAIT_S`."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while True:
        try:
            agent.zfs.capacity()
            return
        except AgentUnreachable as exc:
            if time.monotonic() > deadline:
                raise TransferFailed("the send", agent.address,
                                     f"the agent did not answer again within "
                                     f"{RESTART_WAIT_S:.0f} s: {exc}") from exc
            time.sleep(1.0)


def _receive_state(target: Agent, transfer_id: str) -> ReceiveState | None:
    """The receiver's state now; None when the target agent no longer knows it (restarted)."""
    try:
        return target.transfer.receive_wait(transfer_id, timeout_s=0.0)
    except UnknownTransfer:
        return None


class Stalled(TransferFailed):
    """No byte of a send was acknowledged for the stall time: its receiver was cancelled."""

    def __init__(self, transfer_id: str, target: str, seconds: float) -> None:
        super().__init__(transfer_id, target, f"stalled: no progress for {seconds:.0f} s")


class _Stall:
    """Watches a send's acknowledged bytes; cuts the send (cancels its receiver, which keeps
    the partial receive) when they stop advancing for ``seconds``."""

    def __init__(self, target: Agent, transfer_id: str, seconds: float) -> None:
        self.target = target
        self.transfer_id = transfer_id
        self.seconds = seconds
        self.bytes = -1
        self.since = time.monotonic()
        self.cut = False

    def seen(self, sample: ProgressSample | None) -> None:
        now = time.monotonic()
        if sample is not None and sample.bytes != self.bytes:
            self.bytes, self.since = sample.bytes, now
            return
        if not self.cut and now - self.since > self.seconds:
            self.cut = True
            log.warning("send %s stalled for %.0f s: cutting it", self.transfer_id,
                        now - self.since)
            agent = self.target.fork()
            try:
                agent.transfer.receive_cancel(self.transfer_id)
            except AgentError as exc:
                log.warning("could not cut %s: %s", self.transfer_id, exc)
            finally:
                agent.close()


def _send_watched(source: Agent, send: Callable[[Agent], SendSummary], transfer_id: str,
                  poller: _ProgressPoller, stall: _Stall) -> None:
    """``send(source)`` on a worker thread (``source``'s connection is left to it
    meanwhile) while this thread polls, and cuts it when it stalls; the send's error, if any,
    is raised here as it would have been by the call itself (:class:`Stalled` after a cut)."""
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
            stall.seen(poller.poll())
    finally:
        poller.close()
    worker.join()
    if "error" in outcome:
        if stall.cut:
            raise Stalled(transfer_id, stall.target.address, stall.seconds) from outcome["error"]
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

    def poll(self) -> ProgressSample | None:
        """The latest sample (delivered to the handler), or None when none could be read."""
        if not self.polling:
            return None
        try:
            if self._agent is None:
                self._agent = self.source.fork()
            status = self._agent.transfer.send_status(self.transfer_id)
            sample = progress_sample(status, self.total)
        except UnknownMethod:  # an older agent: only the final sample, from the summary
            log.info("the agent at %s reports no send progress", self.source.address)
            self.polling = False
            return None
        except Exception as exc:  # not started yet, a slow answer: the next poll may do
            log.debug("no progress of %s: %s", self.transfer_id, exc)
            return None
        self._deliver(sample)
        return sample

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
