"""Blocking client of the agent RPC, for the orchestrator and the CLI.

One TCP connection per client, opened on first use and reopened after a failure. Every call is
signed afresh (new nonce, current time), so retrying a call is a new request: a caller that lost
the answer to a state-changing call must check the state (or the agent's journal) before retrying.
"""

from __future__ import annotations

import itertools
import select
import socket
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.auth import sign_request
from ployz.agent.errors import AgentTimeout, AgentUnreachable, ProtocolViolation, remote_error
from ployz.agent.protocol import IDENTIFY, encode_frame, recv_frame
from ployz.transfer.addresses import parse_address

DEFAULT_TIMEOUT_S = 30.0


class AgentClient:
    """``AgentClient("10.210.0.2:7070", key).call("zfs.snapshot", {"snapshots": [...]})``.

    ``machine_id`` is the audience every request is signed for; when not given it is asked from
    the agent once (``agent.identify``) before the first signed call. Not thread-safe: use one
    client per thread.
    """

    def __init__(
        self,
        address: str,
        key: Ed25519PrivateKey,
        machine_id: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.address = address
        self._endpoint = parse_address(address)
        self._key = key
        self._machine_id = machine_id
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)

    @property
    def machine_id(self) -> str:
        if self._machine_id is None:
            result = self._exchange({"method": IDENTIFY}, self._timeout_s)
            self._machine_id = str(result["machine_id"])
        return self._machine_id

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Calls ``method`` and returns its result; raises :class:`RemoteError` subclasses for
        errors the agent returns and :class:`AgentUnreachable` when the answer did not arrive.
        ``timeout_s`` bounds the wait for the answer (give long operations more)."""
        envelope = sign_request(self._key, self.machine_id, method, params or {})
        return self._exchange(envelope, timeout_s or self._timeout_s)

    def fork(self) -> AgentClient:
        """A new client of the same agent with the same key: for another thread, since one
        client is one connection whose answers come back in order (a long call would hold up
        every other call made through it)."""
        return AgentClient(self.address, self._key, self._machine_id, self._timeout_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _exchange(self, request: dict[str, Any], timeout_s: float) -> Any:
        request["id"] = next(self._ids)
        try:
            sock = self._connected()
            sock.settimeout(timeout_s)
            sock.sendall(encode_frame(request))
            response = recv_frame(sock)
        except ProtocolViolation:
            self.close()
            raise
        except TimeoutError as exc:
            self.close()
            raise AgentTimeout(self.address, timeout_s) from exc
        except OSError as exc:
            self.close()
            raise AgentUnreachable(self.address, str(exc) or type(exc).__name__) from exc
        if response.get("id") != request["id"]:
            self.close()
            raise ProtocolViolation(
                f"answer for request {response.get('id')!r} while waiting for {request['id']}"
            )
        if response.get("ok"):
            return response.get("result")
        error = response.get("error") or {}
        raise remote_error(
            str(error.get("code")), str(error.get("message")), error.get("details") or {}
        )

    def _connected(self) -> socket.socket:
        if self._sock is not None and _closed_by_peer(self._sock):
            self.close()
        if self._sock is None:
            self._sock = socket.create_connection(self._endpoint, timeout=self._timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the agent closed this idle connection (for example it restarted): checked
    before sending, so a request is never sent into a connection that is already gone."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
