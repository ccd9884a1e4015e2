"""Errors of the agent RPC, as the calling side sees them, and refusals raised by handlers.

Every error the agent returns travels as ``{"code", "message", "details"}``. Codes are namespaced
by who produced them: ``auth.*`` (the request was refused before running), ``rpc.*`` (the request
itself is wrong), ``agent.*`` (the agent refused the operation), ``zfs.<ErrorClass>`` and
``runtime.<ErrorClass>`` (the library below failed), ``internal`` (a bug in the agent).
"""

from __future__ import annotations

from typing import Any, TypeVar

from ployz.runtime.errors import RuntimeFailure
from ployz.transfer.errors import TransferError
from ployz.zfs.errors import ZFSError

_T = TypeVar("_T")

AUTH_PREFIX = "auth."
REFUSAL_PREFIX = "agent"
CODE_UNKNOWN_METHOD = "rpc.unknown-method"
CODE_BAD_PARAMS = "rpc.bad-params"
CODE_BAD_REQUEST = "rpc.bad-request"
CODE_INTERNAL = "internal"

ERROR_FAMILIES: dict[str, type[Exception]] = {
    "zfs": ZFSError, "runtime": RuntimeFailure, "transfer": TransferError}
"""The libraries below the agent whose errors travel as ``<prefix>.<ClassName>``."""


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
    """The agent answered with an error; ``code`` says which (see the module docstring).

    An error of a library below the agent (``zfs.*``, ``runtime.*``, ``transfer.*``) or a
    refusal of the agent itself (``agent.*``) arrives as an instance of the very class raised
    on the agent, mixed with this one: ``except DatasetNotFound`` and ``except AgentError``
    both catch it (see :func:`remote_error`)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        # Exception's own __init__: a mixed-in library class has another signature.
        Exception.__init__(self, f"{message} [{code}]")
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
    """The most specific :class:`RemoteError` for a wire error code: for a library error or an
    agent refusal, the class raised on the agent combined with :class:`RemoteError`, its
    attributes restored from the details the agent sent."""
    if code.startswith(AUTH_PREFIX):
        return AuthRefused(code, message, details)
    kind = {CODE_UNKNOWN_METHOD: UnknownMethod, CODE_BAD_PARAMS: BadParams}.get(code)
    if kind is not None:
        return kind(code, message, details)
    original = _raised_class(code)
    if original is None:
        return RemoteError(code, message, details)
    mixed = _mixed(original)
    error = mixed.__new__(mixed)
    RemoteError.__init__(error, code, message, details)
    for name, value in (details or {}).items():
        if not hasattr(type(error), name):  # a property or method of the class stays as is
            setattr(error, name, value)
    if isinstance(error, ZFSError):
        error.message = message.removeprefix(f"{error.name}: ")
    return error


def _raised_class(code: str) -> type[Exception] | None:
    prefix, _, name = code.partition(".")
    if prefix == REFUSAL_PREFIX:
        return next((c for c in _subclasses(AgentRefusal) if c.code == name), None)
    base = ERROR_FAMILIES.get(prefix)
    if base is None:
        return None
    return next((c for c in [base, *_subclasses(base)] if c.__name__ == name), None)


def _subclasses(base: type[_T]) -> list[type[_T]]:
    found: list[type[_T]] = []
    for sub in base.__subclasses__():
        if not issubclass(sub, RemoteError):  # the mixed classes made below
            found += [sub, *_subclasses(sub)]
    return found


_MIXED: dict[type[Exception], type[RemoteError]] = {}


def _mixed(original: type[Exception]) -> type[RemoteError]:
    """``Remote<Class>``, made once per class."""
    mixed = _MIXED.get(original)
    if mixed is None:
        mixed = _MIXED[original] = type(f"Remote{original.__name__}", (RemoteError, original),
                                        {"__module__": __name__, "__doc__": original.__doc__})
    return mixed


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


class UnknownTransfer(AgentRefusal):
    code = "unknown-transfer"

    def __init__(self, transfer_id: str, what: str = "receive") -> None:
        super().__init__(f"no {what} with transfer id {transfer_id!r} on this agent")


class NoTrustedKey(AgentRefusal):
    code = "no-trusted-key"

    def __init__(self) -> None:
        super().__init__("this agent trusts no key, so it cannot verify transfer tickets")


class BadSecret(AgentRefusal):
    code = "bad-secret"

    def __init__(self, reason: str) -> None:
        super().__init__(f"transfer secret refused: {reason}")


class SecretMismatch(AgentRefusal):
    """A second ``transfer.receive`` of a running transfer must be the same orchestrator's retry;
    another secret means another transfer reusing the id, which must not take over the first
    one's receiver."""

    code = "secret-mismatch"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"the receive of transfer {transfer_id!r} runs with another secret")
