"""Errors of the agent RPC, as the calling side sees them, and refusals raised by handlers.

Every error the agent returns travels as ``{"code", "message", "details"}``. Codes are namespaced
by who produced them: ``auth.*`` (the request was refused before running), ``rpc.*`` (the request
itself is wrong), ``agent.*`` (the agent refused the operation), ``zfs.<ErrorClass>`` and
``runtime.<ErrorClass>`` (the library below failed), ``internal`` (a bug in the agent).
"""

from __future__ import annotations

from typing import Any

AUTH_PREFIX = "auth."
CODE_UNKNOWN_METHOD = "rpc.unknown-method"
CODE_BAD_PARAMS = "rpc.bad-params"
CODE_BAD_REQUEST = "rpc.bad-request"
CODE_INTERNAL = "internal"


class AgentError(Exception):
    """Base of everything :class:`ployz.agent.client.AgentClient` raises."""


class AgentUnreachable(AgentError):
    """No connection to the agent, or the connection broke before the answer arrived."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"agent at {address} unreachable: {reason}")
        self.address = address
        self.reason = reason


class AgentTimeout(AgentUnreachable):
    """No answer in time. The call may still be running on the agent: its outcome is unknown
    until the caller inspects the state it touches (or the agent's ``agent.operations``)."""

    def __init__(self, address: str, timeout_s: float) -> None:
        super().__init__(address, f"no answer within {timeout_s:g} s; the call may still run")
        self.timeout_s = timeout_s


class ProtocolViolation(AgentError):
    """The peer sent something that is not a valid frame of the agent protocol."""


class RemoteError(AgentError):
    """The agent answered with an error; ``code`` says which (see the module docstring)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        self.details = details or {}


class AuthRefused(RemoteError):
    """The request was unsigned, tampered with, expired, replayed or signed by a stranger."""

    @property
    def reason(self) -> str:
        return self.code.removeprefix(AUTH_PREFIX)


class UnknownMethod(RemoteError):
    pass


class BadParams(RemoteError):
    """The parameters did not validate; ``details["errors"]`` lists each field path."""


def remote_error(code: str, message: str, details: dict[str, Any] | None) -> RemoteError:
    """The most specific :class:`RemoteError` for a wire error code."""
    if code.startswith(AUTH_PREFIX):
        return AuthRefused(code, message, details)
    kind = {CODE_UNKNOWN_METHOD: UnknownMethod, CODE_BAD_PARAMS: BadParams}.get(code, RemoteError)
    return kind(code, message, details)


class AgentRefusal(Exception):
    """Raised by a handler when the agent itself refuses an operation (travels as ``agent.*``)."""

    code = "refused"

    def details(self) -> dict[str, Any]:
        return {}


class OutsidePool(AgentRefusal):
    """A ZFS name outside the pool this agent manages: refused so that a mistyped name can never
    touch another pool on the machine."""

    code = "outside-pool"

    def __init__(self, name: str, pool: str) -> None:
        super().__init__(f"{name} is outside pool {pool}, the only pool this agent manages")
        self.name = name
        self.pool = pool

    def details(self) -> dict[str, Any]:
        return {"name": self.name, "pool": self.pool}


class NoPoolConfigured(AgentRefusal):
    code = "no-pool"

    def __init__(self) -> None:
        super().__init__("this agent was started without --pool; it manages no ZFS pool")
