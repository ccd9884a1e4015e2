"""``transfer.*``: the agent hosts receivers that write streams into its pool, and sends its
snapshots to other agents' receivers. The orchestrator authorises each transfer with a ticket it
signs; the receiving agent accepts tickets from the keys it trusts for requests.

A receive outlives the request that started it (it lasts as long as the stream), so it runs in
its own thread and is observed with ``transfer.receive_wait``. If the agent restarts mid-stream,
ZFS keeps the partial receive and its resume token; the orchestrator calls ``transfer.receive``
again and the new receiver offers that token to the sender.

A send, on the contrary, is the request itself: ``transfer.send`` returns once the receiver
committed, which for a large volume takes hours. So that an operator still sees it move, the agent
keeps the latest progress sample of every send it runs, which ``transfer.send_status`` returns
from another connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ployz.agent.context import AgentContext
from ployz.agent.dispatch import MethodRegistry
from ployz.agent.errors import AgentRefusal
from ployz.agent.methods.zfs_ops import confine
from ployz.agent.protocol import parse_address
from ployz.transfer import Progress, Receiver, ReceiverTimeouts, Sender, Source, TransferError
from ployz.transfer.zfs_endpoints import ZfsSink, ZfsSource

# How long a receiver waits for its sender's next connection before giving up.
RECEIVE_IDLE_WAIT_S = 600.0
# How long the progress of a send that ended stays visible, so that the poll following its end
# still sees it at 100 %; after that it is forgotten, so that the agent does not accumulate them.
SEND_STATUS_GRACE_S = 30.0


class UnknownTransfer(AgentRefusal):
    code = "unknown-transfer"

    def __init__(self, transfer_id: str, what: str = "receive") -> None:
        super().__init__(f"no {what} with transfer id {transfer_id!r} on this agent")


class NoTrustedKey(AgentRefusal):
    code = "no-trusted-key"

    def __init__(self) -> None:
        super().__init__("this agent trusts no key, so it cannot verify transfer tickets")


@dataclass
class _Receive:
    address: str
    listener: socket.socket
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str | None = None

    def state(self) -> dict[str, Any]:
        if not self.done.is_set():
            return {"state": "running", "result": None, "error": None}
        if self.error is not None:
            return {"state": "failed", "result": None, "error": self.error}
        return {"state": "committed", "result": self.result, "error": None}


@dataclass
class _Send:
    """The latest progress of one send; ``ended`` is the monotonic time it ended, if it did."""

    progress: Progress | None = None
    ended: float | None = None

    def status(self) -> dict[str, Any]:
        p = self.progress
        if p is None:  # still connecting: the engine has not sampled anything yet
            return {"bytes": 0, "total": None, "wire_bytes": 0, "rate": 0.0, "eta_s": None,
                    "finished": False}
        return {"bytes": p.done, "total": p.total, "wire_bytes": p.wire_bytes, "rate": p.rate,
                "eta_s": p.eta, "finished": p.finished}


class SendProgress:
    """The progress of the sends running on this agent, by transfer id.

    The engine's progress callback runs on its watcher thread and the status is asked from
    request threads, hence the lock. An entry lives as long as its send plus ``grace`` seconds;
    ended entries are pruned whenever the book is used, so it holds no more than the sends
    running and those ended recently.
    """

    def __init__(self, grace: float = SEND_STATUS_GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._sends: dict[str, _Send] = {}
        self._lock = threading.Lock()

    @contextmanager
    def track(self, transfer_id: str) -> Iterator[Callable[[Progress], None]]:
        """Records the send of ``transfer_id`` while the block runs; yields the callback to give
        the :class:`Sender`. A second send of the same id (an orchestrator retrying) replaces
        the first one's entry, and the first one ending leaves the second one's alone."""
        entry = _Send()

        def record(progress: Progress) -> None:
            entry.progress = progress  # one reference assignment: atomic under the GIL

        with self._lock:
            self._prune()
            self._sends[transfer_id] = entry
        try:
            yield record
        finally:
            entry.ended = self.clock()

    def status(self, transfer_id: str) -> dict[str, Any]:
        with self._lock:
            self._prune()
            entry = self._sends.get(transfer_id)
        if entry is None:
            raise UnknownTransfer(transfer_id, "send")
        return entry.status()

    def _prune(self) -> None:
        now = self.clock()
        for transfer_id, entry in list(self._sends.items()):
            if entry.ended is not None and now - entry.ended > self.grace:
                del self._sends[transfer_id]


def _zfs_source(snapshot: str, base: str | None) -> Source:
    return ZfsSource(snapshot, base=base)


class TransferMethods:
    def __init__(self, context: AgentContext,
                 source_for: Callable[[str, str | None], Source] = _zfs_source) -> None:
        """``source_for(snapshot, base)`` opens what ``send`` streams: ZFS on a machine; the
        host tests give files, to run the same send bookkeeping without a pool."""
        self._context = context
        self._source_for = source_for
        self._receives: dict[str, _Receive] = {}
        self._sends = SendProgress()
        self._lock = threading.Lock()

    def receive(self, transfer_id: str, dataset: str,
                props: dict[str, int | str] | None = None) -> dict[str, str]:
        """Starts a receiver for one transfer into ``dataset`` and returns its address. Asking
        again for a transfer still running returns the same receiver. ``props`` are set on the
        dataset a full stream creates."""
        confine(self._context.pool, dataset)
        if not self._context.trusted:
            raise NoTrustedKey()
        with self._lock:
            current = self._receives.get(transfer_id)
            if current is not None and not current.done.is_set():
                return {"address": current.address}
            host = self._context.address.rsplit(":", 1)[0].strip("[]")
            listener = socket.create_server((host, 0))
            port = listener.getsockname()[1]
            entry = _Receive(f"{host}:{port}", listener)
            self._receives[transfer_id] = entry
        receiver = Receiver(listener, ZfsSink(dataset, prefix=self._context.pool, props=props),
                            self._context.trusted[0],
                            timeouts=ReceiverTimeouts(wait=RECEIVE_IDLE_WAIT_S))
        threading.Thread(target=self._serve, args=(entry, receiver),
                         name=f"receive-{transfer_id}", daemon=True).start()
        return {"address": entry.address}

    @staticmethod
    def _serve(entry: _Receive, receiver: Receiver) -> None:
        try:
            entry.result = receiver.serve().summary()
        except (TransferError, OSError) as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
        finally:
            entry.listener.close()
            entry.done.set()

    def receive_wait(self, transfer_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The receive's state once it ended, or ``running`` after ``timeout_s``."""
        entry = self._entry(transfer_id)
        entry.done.wait(max(0.0, min(timeout_s, 300.0)))
        return entry.state()

    def receive_cancel(self, transfer_id: str) -> None:
        """Stops the receiver; partial data stays for the caller to resume or abort."""
        entry = self._entry(transfer_id)
        if not entry.done.is_set():
            try:
                entry.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                entry.listener.close()
            entry.done.wait(30.0)

    def _entry(self, transfer_id: str) -> _Receive:
        with self._lock:
            entry = self._receives.get(transfer_id)
        if entry is None:
            raise UnknownTransfer(transfer_id)
        return entry

    def send(self, transfer_id: str, snapshot: str, to: str, ticket: str,
             base: str | None = None, codec: str = "auto", bwlimit: float = 0.0) -> dict[str, Any]:
        """Streams ``snapshot`` (incremental from ``base``) to the receiver at ``to``; returns
        when the receiver acknowledged what it committed."""
        confine(self._context.pool, snapshot, *([base] if base else []))
        with self._sends.track(transfer_id) as record:
            sender = Sender(self._source_for(snapshot, base), parse_address(to), ticket=ticket,
                            transfer_id=transfer_id, codec=codec, bwlimit=bwlimit,
                            progress=record)
            return sender.send().summary()

    def send_status(self, transfer_id: str) -> dict[str, Any]:
        """The latest progress of the send of ``transfer_id`` running on this agent (or ended
        less than half a minute ago): ``bytes`` of the stream sent so far, ``total`` (the
        estimate; ``None`` if unknown), ``wire_bytes``, ``rate`` (bytes per second), ``eta_s``
        (``None`` while unknown) and ``finished`` (the receiver committed). The send itself
        blocks its own request for as long as it runs, so this is how its progress is seen."""
        return self._sends.status(transfer_id)


def register(registry: MethodRegistry, context: AgentContext) -> None:
    methods = TransferMethods(context)
    registry.register_errors(TransferError, "transfer", lambda exc: {"message": str(exc)})
    registry.register("transfer.receive", methods.receive, mutating=True)
    registry.register("transfer.receive_wait", methods.receive_wait, mutating=False)
    registry.register("transfer.receive_cancel", methods.receive_cancel, mutating=True)
    registry.register("transfer.send", methods.send, mutating=True)
    registry.register("transfer.send_status", methods.send_status, mutating=False)
