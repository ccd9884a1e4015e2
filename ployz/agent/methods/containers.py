"""``container.*``: containers of this machine, delegated to :mod:`ployz.runtime`.

The runtime's own methods are registered as they are: their signatures are the RPC parameters.
"""

from __future__ import annotations

from ployz.agent.api import ContainerApi
from ployz.agent.context import AgentContext
from ployz.agent.dispatch import MethodRegistry
from ployz.runtime.errors import RuntimeFailure

_MUTATING = ("create", "start", "stop", "remove")
_READING = ("inspect", "list", "wait_ready", "has_image")


def register(registry: MethodRegistry, context: AgentContext) -> None:
    registry.register_errors(RuntimeFailure, lambda exc: exc.details())
    runtime: ContainerApi = context.runtime  # the runtime is what the interface mirrors
    for name in _MUTATING + _READING:
        function = getattr(runtime, name)
        registry.register(f"container.{name}", function, mutating=name in _MUTATING)
