"""The table of RPC methods: parameter validation, execution, and error translation.

A method is a plain function with type-annotated parameters, registered under a dotted name
(``zfs.snapshot``, ``container.start``). Its parameters are validated by a pydantic model built
from its signature, so a bad call is refused with the path of each bad field before anything runs.
Blocking functions (everything that talks to ZFS or Docker) run in a thread pool; ``async``
functions run on the event loop. A library adds its error family once with
:meth:`MethodRegistry.register_errors`, and its exceptions travel as ``<prefix>.<ClassName>``.

Adding a capability to the agent is a module with a ``register(registry, context)`` function;
for example the transfer receiver registers ``transfer.receive`` (``mutating=True`` so it is
journaled) and the ``transfer`` error family.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ployz.agent.errors import (
    CODE_BAD_PARAMS,
    CODE_INTERNAL,
    CODE_UNKNOWN_METHOD,
    ERROR_FAMILIES,
    REFUSAL_PREFIX,
    AgentRefusal,
)


@dataclass(frozen=True)
class WireError:
    code: str
    message: str
    details: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class CallRefused(Exception):
    """The call cannot run as requested (unknown method, invalid parameters)."""

    def __init__(self, error: WireError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class Method:
    name: str
    function: Callable[..., Any]
    params: type[BaseModel]
    mutating: bool
    secret: frozenset[str] = frozenset()  # parameters never written to the journal

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def journaled(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters as the journal keeps them: a secret stays out of the agent's disk
        and of ``agent.operations`` answers, which outlive the call it was needed for."""
        return {key: "(secret)" if key in self.secret and value is not None else value
                for key, value in params.items()}


@dataclass(frozen=True)
class BoundCall:
    method: Method
    arguments: dict[str, Any]


@dataclass(frozen=True)
class _ErrorFamily:
    base: type[BaseException]
    prefix: str
    details: Callable[[Any], dict[str, Any]]
    name: Callable[[Any], str] = lambda exc: type(exc).__name__


class MethodRegistry:
    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        self._families: list[_ErrorFamily] = [
            # The machine's environment failed (a path, a permission), not the agent's code.
            _ErrorFamily(OSError, "os", lambda exc: {"errno": exc.errno, "path": exc.filename}),
            _ErrorFamily(AgentRefusal, REFUSAL_PREFIX, lambda exc: exc.details(),
                         lambda exc: exc.code),
        ]

    def register(self, name: str, function: Callable[..., Any], *, mutating: bool,
                 secret: tuple[str, ...] = ()) -> None:
        """Adds a method. ``mutating`` methods change machine state and are journaled, all but
        their ``secret`` parameters."""
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = Method(name, function, _params_model(name, function), mutating,
                                     frozenset(secret))

    def register_errors(
        self,
        base: type[BaseException],
        details: Callable[[Any], dict[str, Any]],
    ) -> None:
        """Exceptions derived from ``base``, one of :data:`ERROR_FAMILIES`, travel as
        ``<prefix>.<ClassName>`` with ``details``; the client raises them as the same class."""
        prefix = next((p for p, b in ERROR_FAMILIES.items() if b is base), None)
        if prefix is None:
            raise ValueError(f"{base.__name__} is not an error family of the agent protocol")
        self._families.append(_ErrorFamily(base, prefix, details))

    def names(self) -> list[str]:
        return sorted(self._methods)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every method's purpose, whether it changes state, and its parameters' JSON schema."""
        return {
            name: {
                "doc": inspect.getdoc(method.function) or "",
                "mutating": method.mutating,
                "params": method.params.model_json_schema(),
            }
            for name, method in sorted(self._methods.items())
        }

    def bind(self, name: str, params: dict[str, Any]) -> BoundCall:
        method = self._methods.get(name)
        if method is None:
            message = f"no method {name!r} on this agent"
            raise CallRefused(WireError(CODE_UNKNOWN_METHOD, message, {"method": name}))
        try:
            validated = method.params.model_validate(params)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(part) for part in e["loc"]), "error": e["msg"]}
                for e in exc.errors()
            ]
            summary = "; ".join(f"{e['field']}: {e['error']}" for e in errors)
            raise CallRefused(
                WireError(CODE_BAD_PARAMS, f"invalid parameters for {name}: {summary}",
                          {"method": name, "errors": errors})
            ) from exc
        arguments = {field: getattr(validated, field) for field in method.params.model_fields}
        return BoundCall(method, arguments)

    async def run(self, call: BoundCall, executor: Executor) -> Any:
        """Runs the call and returns its result as JSON-compatible data."""
        if call.method.is_async:
            result = await call.method.function(**call.arguments)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                executor, partial(call.method.function, **call.arguments)
            )
        return to_wire(result)

    def error_of(self, exc: BaseException) -> WireError:
        """The wire form of an exception raised by a method."""
        if isinstance(exc, CallRefused):
            return exc.error
        for family in reversed(self._families):
            if isinstance(exc, family.base):
                return WireError(
                    f"{family.prefix}.{family.name(exc)}",
                    str(exc),
                    to_wire(family.details(exc)),
                )
        return WireError(CODE_INTERNAL, f"{type(exc).__name__}: {exc}", {})


def _params_model(name: str, function: Callable[..., Any]) -> type[BaseModel]:
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise TypeError(f"method {name}: parameter {parameter.name} must be a named one")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    model_name = "".join(part.title() for part in name.replace("_", ".").split(".")) + "Params"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def to_wire(value: Any) -> Any:
    """JSON-compatible form of a method's result (models, dataclasses, containers of them)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(key): to_wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_wire(item) for item in value]
    raise TypeError(f"cannot send a {type(value).__name__} over the agent protocol")
