"""Periodic heartbeat: the agent pushes its machine fact to whoever keeps the cluster's facts.

The agent depends only on :data:`HeartbeatCallback`; the control plane (or anything else, such as
a test) supplies the callable. The callback may block (a network or database write), so it runs
in a worker thread, and a failing callback is logged and retried at the next beat: the agent
keeps serving its RPC whether or not the control plane is reachable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from ployz.agent.context import AgentContext
from ployz.agent.facts import collect_facts

HeartbeatCallback = Callable[[str, dict[str, Any]], None]
"""``heartbeat(machine_id, facts)``; ``facts`` is the dict built by ``collect_facts``."""

log = logging.getLogger(__name__)


def beat_once(context: AgentContext, callback: HeartbeatCallback) -> None:
    callback(context.machine_id, collect_facts(context))


async def heartbeat_forever(
    context: AgentContext, callback: HeartbeatCallback, interval_s: float, executor: Executor
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(executor, beat_once, context, callback)
        except Exception:
            log.exception("heartbeat of machine %s failed; retrying in %g s",
                          context.machine_id, interval_s)
        await asyncio.sleep(interval_s)
