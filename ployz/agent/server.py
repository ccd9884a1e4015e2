"""The agent's RPC server: frames in, verified and dispatched, frames out.

Each connection is served by its own task; requests on one connection run in order, requests on
different connections run concurrently. ``agent.identify`` is the only call answered without a
signature: it returns the machine id a client must name as the audience of its signed requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any

from ployz.agent.auth import AuthFailure, RequestVerifier, now_ms
from ployz.agent.dispatch import MethodRegistry
from ployz.agent.errors import AUTH_PREFIX, CODE_BAD_REQUEST, CODE_INTERNAL, ProtocolViolation
from ployz.agent.protocol import IDENTIFY, encode_frame, read_frame
from ployz.agent.state import AgentState

log = logging.getLogger(__name__)


class AgentServer:
    def __init__(
        self,
        machine_id: str,
        registry: MethodRegistry,
        verifier: RequestVerifier,
        state: AgentState,
        executor: Executor,
    ) -> None:
        self.machine_id = machine_id
        self._registry = registry
        self._verifier = verifier
        self._state = state
        self._executor = executor
        self._connections: set[asyncio.StreamWriter] = set()

    async def listen(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve_connection, host, port)

    def close_connections(self) -> None:
        """Closes every client connection (at shutdown, after the listener stopped)."""
        for writer in list(self._connections):
            writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        self._connections.add(writer)
        try:
            while (request := await read_frame(reader)) is not None:
                writer.write(encode_frame(await self.respond(request)))
                await writer.drain()
        except ProtocolViolation as exc:
            log.warning("closing connection from %s: %s", peer, exc)
            writer.write(encode_frame(_error(None, CODE_BAD_REQUEST, str(exc), {})))
        except ConnectionError:
            log.info("connection from %s closed before its answer was sent", peer)
        finally:
            self._connections.discard(writer)
            writer.close()

    async def respond(self, request: dict[str, Any]) -> dict[str, Any]:
        request_id = request.get("id")
        method = request.get("method")
        if method == IDENTIFY:
            return {"id": request_id, "ok": True, "result": {"machine_id": self.machine_id}}
        started = time.monotonic()
        try:
            self._verifier.verify(request, now_ms())
        except AuthFailure as exc:
            log.warning("refused %s: %s", method, exc)
            return _error(request_id, AUTH_PREFIX + exc.reason, str(exc), {})
        try:
            call = self._registry.bind(request["method"], request["params"])
            operation = (
                self._state.begin_operation(call.method.name,
                                            call.method.journaled(request["params"]),
                                            request["nonce"], now_ms())
                if call.method.mutating
                else None
            )
            try:
                result = await self._registry.run(call, self._executor)
            except Exception as exc:
                if operation is not None:
                    self._state.finish_operation(
                        operation, self._registry.error_of(exc).code, now_ms()
                    )
                raise
            if operation is not None:
                self._state.finish_operation(operation, None, now_ms())
        except Exception as exc:
            error = self._registry.error_of(exc)
            if error.code == CODE_INTERNAL:
                log.exception("%s failed", method)
            else:
                log.info("%s failed: %s", method, error.message)
            return _error(request_id, error.code, error.message, error.details)
        log.info("%s ok in %.3f s", method, time.monotonic() - started)
        return {"id": request_id, "ok": True, "result": result}


def _error(
    request_id: Any, code: str, message: str, details: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "ok": False,
        "error": {"code": code, "message": message, "details": details},
    }
