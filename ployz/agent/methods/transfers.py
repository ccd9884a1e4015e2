"""``transfer.*``: the agent hosts receivers that write streams into its pool, and sends its
snapshots to other agents' receivers. The orchestrator authorises each transfer with a ticket it
signs; the receiving agent accepts tickets from any of the keys it trusts for requests. For each
transfer the orchestrator also chooses a secret and gives it to both agents over their
authenticated RPC (never over the data connection): the sender proves it knows the secret and
the session's keys derive from it, so the two agents authenticate each other without either
holding the orchestrator's key.

A receive outlives the request that started it (it lasts as long as the stream), so it runs in
its own thread and is observed with ``transfer.receive_wait``. If the agent restarts mid-stream,
ZFS keeps the partial receive and its resume token; the orchestrator calls ``transfer.receive``
again and the new receiver offers that token to the sender.

A send, on the contrary, is the request itself: ``transfer.send`` returns once the receiver
committed, which for a large volume takes hours. So that an operator still sees it move, the agent
keeps the latest progress sample of every send it runs, which ``transfer.send_status`` returns
from another connection.

An agent runs for months: both books, of receives and of sends, forget an entry a grace period
after it ended, so that they hold only what runs and what ended recently.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ployz._xfer import HEADER_SIZE, RateLimit
from ployz.agent.api import (
    ReceiveEndpoint,
    ReceiveState,
    ReceiveSummary,
    SendStatus,
    SendSummary,
    SetProps,
    TransferApi,
)
from ployz.agent.context import AgentContext
from ployz.agent.dispatch import MethodRegistry
from ployz.agent.errors import BadSecret, NoTrustedKey, SecretMismatch, UnknownTransfer
from ployz.agent.methods.zfs_ops import confine
from ployz.transfer.addresses import parse_address
from ployz.transfer.endpoints import Sink, Source
from ployz.transfer.errors import TransferError
from ployz.transfer.probe import ProbeSink, ProbeSource
from ployz.transfer.progress import Progress
from ployz.transfer.protocol import DEFAULT_FRAME_SIZE
from ployz.transfer.receiver import Receiver, ReceiverTimeouts
from ployz.transfer.results import ReceiveResult
from ployz.transfer.sender import RetryPolicy, Sender
from ployz.transfer.session import parse_secret
from ployz.transfer.zfs_endpoints import ZfsSink, ZfsSource

# How long a receiver waits for its sender's next connection before giving up.
RECEIVE_IDLE_WAIT_S = 600.0
# How long the progress of a send that ended stays visible, so that the poll following its end
# still sees it at 100 %; after that it is forgotten, so that the agent does not accumulate them.
SEND_STATUS_GRACE_S = 30.0
# How long the outcome of a receive that ended stays visible. The receiver usually ends just
# before its sender returns, and the orchestrator asks for the outcome only then, after its own
# round trips; five minutes leaves room for a slow orchestrator without keeping receives forever.
RECEIVE_STATE_GRACE_S = 300.0
# How long ``transfer.receive_cancel`` waits for the receiver to stop (it does within a second).
CANCEL_WAIT_S = 10.0


class _Ending(Protocol):
    ended: float | None


_E = TypeVar("_E", bound=_Ending)


class TransferBook(Generic[_E]):
    """Entries by transfer id, each forgotten ``grace`` seconds after it ended.

    Entries are written by the threads running transfers and read by request threads, hence
    the lock. Ended entries are pruned whenever the book is used, so it holds no more than the
    transfers running and those ended recently. A new entry for an id replaces the previous
    one (an orchestrator retrying); the previous one ending leaves the new one alone.
    """

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._entries: dict[str, _E] = {}
        self._lock = threading.Lock()

    def put(self, transfer_id: str, entry: _E) -> None:
        with self._lock:
            self._prune()
            self._entries[transfer_id] = entry

    def get(self, transfer_id: str) -> _E | None:
        with self._lock:
            self._prune()
            return self._entries.get(transfer_id)

    def end(self, entry: _E) -> None:
        """Starts the entry's grace period, once: from the first time its outcome is known."""
        if entry.ended is None:
            entry.ended = self.clock()  # one reference assignment: atomic under the GIL

    def _prune(self) -> None:
        now = self.clock()
        for transfer_id, entry in list(self._entries.items()):
            if entry.ended is not None and now - entry.ended > self.grace:
                del self._entries[transfer_id]


@dataclass
class _Receive:
    address: str
    listener: socket.socket
    receiver: Receiver
    secret: bytes | None
    done: threading.Event = field(default_factory=threading.Event)
    result: ReceiveSummary | None = None
    error: str | None = None
    ended: float | None = None

    def state(self) -> ReceiveState:
        if not self.done.is_set():
            return ReceiveState(state="running")
        if self.error is not None:
            return ReceiveState(state="failed", error=self.error)
        return ReceiveState(state="committed", result=self.result)

    def holds(self, secret: bytes | None) -> bool:
        if self.secret is None or secret is None:
            return self.secret is secret
        return hmac.compare_digest(self.secret, secret)


@dataclass
class _Send:
    """The latest progress of one send; ``ended`` is the monotonic time it ended, if it did."""

    progress: Progress | None = None
    ended: float | None = None

    def status(self) -> SendStatus:
        p = self.progress
        if p is None:  # still connecting: the engine has not sampled anything yet
            return SendStatus(bytes=0, total=None, wire_bytes=0, rate=0.0, eta_s=None,
                              finished=False)
        return SendStatus(bytes=p.done, total=p.total, wire_bytes=p.wire_bytes, rate=p.rate,
                          eta_s=p.eta, finished=p.finished)


class SendProgress:
    """The progress of the sends running on this agent, by transfer id, each kept ``grace``
    seconds after it ended. The engine's progress callback runs on its watcher thread and the
    status is asked from request threads."""

    def __init__(self, grace: float = SEND_STATUS_GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sends: TransferBook[_Send] = TransferBook(grace, clock)

    @contextmanager
    def track(self, transfer_id: str) -> Iterator[Callable[[Progress], None]]:
        """Records the send of ``transfer_id`` while the block runs; yields the callback to give
        the :class:`Sender`."""
        entry = _Send()

        def record(progress: Progress) -> None:
            entry.progress = progress  # one reference assignment: atomic under the GIL

        self._sends.put(transfer_id, entry)
        try:
            yield record
        finally:
            self._sends.end(entry)

    def status(self, transfer_id: str) -> SendStatus:
        entry = self._sends.get(transfer_id)
        if entry is None:
            raise UnknownTransfer(transfer_id, "send")
        return entry.status()


class SharedLimits:
    """The bandwidth limits this agent's sends share, by group (the sends of one migration, or
    of one drain, all leave from this machine): one limit per group and rate while any of its
    sends runs, so that together they keep to it and what one that ended took goes to the
    others; forgotten with the group's last send."""

    def __init__(self) -> None:
        self._limits: dict[tuple[str, float], tuple[RateLimit, int]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def share(self, group: str, rate: float) -> Iterator[RateLimit]:
        key = (group, rate)
        with self._lock:
            limit, users = self._limits.get(key) or (
                RateLimit(rate, 2.0 * (DEFAULT_FRAME_SIZE + HEADER_SIZE)), 0)
            self._limits[key] = (limit, users + 1)
        try:
            yield limit
        finally:
            with self._lock:
                limit, users = self._limits[key]
                if users == 1:
                    del self._limits[key]
                else:
                    self._limits[key] = (limit, users - 1)

    def groups(self) -> list[str]:
        """The groups with a send running now."""
        with self._lock:
            return sorted({group for group, _rate in self._limits})


SinkFactory = Callable[[str, str | None, Mapping[str, int | str] | None], Sink]
"""``(dataset, pool, props)`` -> the sink a receive writes."""


def _zfs_source(snapshot: str, base: str | None) -> Source:
    return ZfsSource(snapshot, base=base)


def _zfs_sink(dataset: str, pool: str | None, props: Mapping[str, int | str] | None) -> Sink:
    return ZfsSink(dataset, prefix=pool, props=props)


def _secret(text: str | None) -> bytes | None:
    """The secret's bytes; a malformed one is refused before anything starts. Without a
    secret the engine falls back to signature proofs, which an agent cannot give as a
    sender: it holds no ticket-signing key."""
    if text is None:
        return None
    try:
        return parse_secret(text)
    except ValueError as exc:
        raise BadSecret(str(exc)) from None


class TransferMethods(TransferApi):
    def __init__(self, context: AgentContext,
                 source_for: Callable[[str, str | None], Source] = _zfs_source,
                 sink_for: SinkFactory = _zfs_sink,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``source_for(snapshot, base)`` opens what ``send`` streams and ``sink_for`` what
        ``receive`` writes: ZFS on a machine; the host tests give files, to run the same
        bookkeeping without a pool. ``clock`` times the books' grace periods."""
        self._context = context
        self._source_for = source_for
        self._sink_for = sink_for
        self._receives: TransferBook[_Receive] = TransferBook(RECEIVE_STATE_GRACE_S, clock)
        self._sends = SendProgress(clock=clock)
        self.limits = SharedLimits()
        self._lock = threading.Lock()  # one receive starts at a time: check, then replace

    def receive(self, transfer_id: str, dataset: str,
                props: SetProps | None = None,
                secret: str | None = None) -> ReceiveEndpoint:
        """Starts a receiver for one transfer into ``dataset`` and returns its address. Asking
        again for a transfer still running returns the same receiver if the secret is the
        same, and is refused otherwise. ``props`` are set on the dataset a full stream
        creates. ``secret`` (64 hex digits) is the transfer's secret, which the sender must
        prove it knows."""
        confine(self._context.pool, dataset)
        if not self._context.trusted:
            raise NoTrustedKey()
        key = _secret(secret)
        return self._start_receive(transfer_id, key,
                                   lambda: self._sink_for(dataset, self._context.pool, props))

    def probe_receive(self, transfer_id: str, secret: str) -> ReceiveEndpoint:
        """Starts a receiver that takes one probe of the link and discards it (``probe_send``
        on the other agent sends it); observed and cancelled as a receive is."""
        if not self._context.trusted:
            raise NoTrustedKey()
        return self._start_receive(transfer_id, _secret(secret),
                                   lambda: ProbeSink(transfer_id))

    def _start_receive(self, transfer_id: str, key: bytes | None,
                       sink: Callable[[], Sink]) -> ReceiveEndpoint:
        """The receiver of ``transfer_id`` running, or a new one writing ``sink()``."""
        with self._lock:
            current = self._receives.get(transfer_id)
            if current is not None and not current.done.is_set():
                if not current.holds(key):
                    raise SecretMismatch(transfer_id)
                return ReceiveEndpoint(address=current.address)
            entry = self._new_receive(sink(), key)
            self._receives.put(transfer_id, entry)
        threading.Thread(target=self._serve, args=(entry,), name=f"receive-{transfer_id}",
                         daemon=True).start()
        return ReceiveEndpoint(address=entry.address)

    def _new_receive(self, sink: Sink, secret: bytes | None) -> _Receive:
        host = self._context.address.rsplit(":", 1)[0].strip("[]")
        listener = socket.create_server((host, 0))
        receiver = Receiver(listener, sink, self._context.trusted,
                            timeouts=ReceiverTimeouts(wait=RECEIVE_IDLE_WAIT_S), secret=secret)
        return _Receive(f"{host}:{listener.getsockname()[1]}", listener, receiver, secret)

    def _serve(self, entry: _Receive) -> None:
        def committed(result: ReceiveResult) -> None:
            # the orchestrator's receive_wait returns now, not after the ACK or the linger
            entry.result = ReceiveSummary.model_validate(result.summary())
            self._receives.end(entry)
            entry.done.set()

        try:
            result = ReceiveSummary.model_validate(
                entry.receiver.serve(on_commit=committed).summary())
            if entry.result is None:  # the outcome told at the commit is the one that stays
                entry.result = result
        except (TransferError, OSError) as exc:
            if entry.result is None:  # a failure after the commit changes nothing of it
                entry.error = f"{type(exc).__name__}: {exc}"
        finally:
            entry.listener.close()
            self._receives.end(entry)
            entry.done.set()

    def receive_wait(self, transfer_id: str, timeout_s: float = 30.0) -> ReceiveState:
        """The receive's state once it ended, or ``running`` after ``timeout_s``."""
        entry = self._entry(transfer_id)
        entry.done.wait(max(0.0, min(timeout_s, 300.0)))
        return entry.state()

    def receive_cancel(self, transfer_id: str) -> ReceiveState:
        """Stops the receiver, whether it still waits for its sender or streams, and returns
        its state: ``failed`` (cancelled), or ``committed`` if the stream committed first.
        Partial data stays for the caller to resume or abort."""
        entry = self._entry(transfer_id)
        entry.receiver.cancel()
        entry.done.wait(CANCEL_WAIT_S)
        return entry.state()

    def _entry(self, transfer_id: str) -> _Receive:
        entry = self._receives.get(transfer_id)
        if entry is None:
            raise UnknownTransfer(transfer_id)
        return entry

    def send(self, transfer_id: str, snapshot: str, to: str, ticket: str,
             base: str | None = None, codec: str = "auto", bwlimit: float = 0.0,
             secret: str | None = None, encrypt: bool = False,
             limit_group: str | None = None) -> SendSummary:
        """Streams ``snapshot`` (incremental from ``base``) to the receiver at ``to``; returns
        when the receiver acknowledged what it committed. ``secret`` is the transfer's secret
        the receiver was given; ``encrypt`` also encrypts the stream (it is always
        authenticated). ``bwlimit`` (bytes per second) caps this send, or with
        ``limit_group`` all the sends of that group running on this agent together."""
        confine(self._context.pool, snapshot, *([base] if base else []))
        key = _secret(secret)
        with contextlib.ExitStack() as stack:
            shared = (stack.enter_context(self.limits.share(limit_group, bwlimit))
                      if limit_group and bwlimit > 0 else None)
            record = stack.enter_context(self._sends.track(transfer_id))
            sender = Sender(self._source_for(snapshot, base), parse_address(to), ticket=ticket,
                            transfer_id=transfer_id, codec=codec,
                            bwlimit=0.0 if shared else bwlimit, shared_limit=shared,
                            progress=record, secret=key, encrypt=encrypt)
            return SendSummary.model_validate(sender.send().summary())

    def probe_send(self, transfer_id: str, to: str, ticket: str, secret: str,
                   seconds: float) -> SendSummary:
        """Sends random bytes for ``seconds`` (at most ten) to the probe receiver at ``to``,
        uncompressed; returns when the receiver acknowledged them. The summary's bytes over
        its seconds is the link's rate as this agent's sends find it now."""
        key = _secret(secret)
        with self._sends.track(transfer_id) as record:
            sender = Sender(ProbeSource(seconds), parse_address(to), ticket=ticket,
                            transfer_id=transfer_id, codec="none", progress=record, secret=key,
                            retry=RetryPolicy(attempts=1))
            return SendSummary.model_validate(sender.send().summary())

    def send_status(self, transfer_id: str) -> SendStatus:
        """The latest progress of the send of ``transfer_id`` running on this agent (or ended
        less than half a minute ago): ``bytes`` of the stream sent so far, ``total`` (the
        estimate; ``None`` if unknown), ``wire_bytes``, ``rate`` (bytes per second), ``eta_s``
        (``None`` while unknown) and ``finished`` (the receiver committed). The send itself
        blocks its own request for as long as it runs, so this is how its progress is seen."""
        return self._sends.status(transfer_id)


def register(registry: MethodRegistry, context: AgentContext) -> None:
    methods = TransferMethods(context)
    registry.register_errors(TransferError, lambda exc: {"message": str(exc)})
    registry.register("transfer.receive", methods.receive, mutating=True, secret=("secret",))
    registry.register("transfer.receive_wait", methods.receive_wait, mutating=False)
    registry.register("transfer.receive_cancel", methods.receive_cancel, mutating=True)
    registry.register("transfer.send", methods.send, mutating=True, secret=("secret",))
    registry.register("transfer.send_status", methods.send_status, mutating=False)
    # a probe changes nothing on either machine: not journaled
    registry.register("transfer.probe_receive", methods.probe_receive, mutating=False)
    registry.register("transfer.probe_send", methods.probe_send, mutating=False)
