"""``transfer.*``: the agent hosts receivers that write streams into its pool, and sends its
snapshots to other agents' receivers. The orchestrator authorises each transfer with a ticket it
signs; the receiving agent accepts tickets from the keys it trusts for requests.

A receive outlives the request that started it (it lasts as long as the stream), so it runs in
its own thread and is observed with ``transfer.receive_wait``. If the agent restarts mid-stream,
ZFS keeps the partial receive and its resume token; the orchestrator calls ``transfer.receive``
again and the new receiver offers that token to the sender.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from ployz.agent.context import AgentContext
from ployz.agent.dispatch import MethodRegistry
from ployz.agent.errors import AgentRefusal
from ployz.agent.methods.zfs_ops import confine
from ployz.agent.protocol import parse_address
from ployz.transfer import Receiver, ReceiverTimeouts, Sender, TransferError
from ployz.transfer.zfs_endpoints import ZfsSink, ZfsSource

# How long a receiver waits for its sender's next connection before giving up.
RECEIVE_IDLE_WAIT_S = 600.0


class UnknownTransfer(AgentRefusal):
    code = "unknown-transfer"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"no receive with transfer id {transfer_id!r} on this agent")


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


class TransferMethods:
    def __init__(self, context: AgentContext) -> None:
        self._context = context
        self._receives: dict[str, _Receive] = {}
        self._lock = threading.Lock()

    def receive(self, transfer_id: str, dataset: str) -> dict[str, str]:
        """Starts a receiver for one transfer into ``dataset`` and returns its address. Asking
        again for a transfer still running returns the same receiver."""
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
        receiver = Receiver(listener, ZfsSink(dataset, prefix=self._context.pool),
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
        sender = Sender(ZfsSource(snapshot, base=base), parse_address(to), ticket=ticket,
                        transfer_id=transfer_id, codec=codec, bwlimit=bwlimit)
        return sender.send().summary()


def register(registry: MethodRegistry, context: AgentContext) -> None:
    methods = TransferMethods(context)
    registry.register_errors(TransferError, "transfer", lambda exc: {"message": str(exc)})
    registry.register("transfer.receive", methods.receive, mutating=True)
    registry.register("transfer.receive_wait", methods.receive_wait, mutating=False)
    registry.register("transfer.receive_cancel", methods.receive_cancel, mutating=True)
    registry.register("transfer.send", methods.send, mutating=True)
