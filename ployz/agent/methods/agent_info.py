"""``agent.*``: what the agent is, what it reports, and what it was doing when it last stopped."""

from __future__ import annotations

from typing import Any

from ployz.agent.context import AgentContext
from ployz.agent.dispatch import MethodRegistry
from ployz.agent.facts import collect_facts
from ployz.agent.state import OperationStatus


def register(registry: MethodRegistry, context: AgentContext) -> None:
    def health() -> dict[str, Any]:
        """The machine fact, plus the methods this agent offers."""
        return {**collect_facts(context), "methods": registry.names()}

    async def operations(
        status: OperationStatus | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The operation journal, newest first; ``status="interrupted"`` lists the calls that
        were running when the agent last stopped. Async: the journal lives on the loop thread."""
        return context.state.operations(status, limit)

    def methods() -> dict[str, dict[str, Any]]:
        """What every method does, whether it changes state, and its parameters."""
        return registry.describe()

    registry.register("agent.health", health, mutating=False)
    registry.register("agent.methods", methods, mutating=False)
    registry.register("agent.operations", operations, mutating=False)
