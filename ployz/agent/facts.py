"""The machine fact an agent reports: identity, address, pool capacity, its containers.

Collected for every heartbeat and for ``agent.health``. A part that cannot be measured (ZFS
missing, Docker down) is reported in ``problems`` instead of failing the whole report: a machine
whose Docker daemon is down must still heartbeat, and say so.
"""

from __future__ import annotations

from typing import Any

from ployz.agent.auth import now_ms
from ployz.agent.context import AgentContext
from ployz.agent.methods.zfs_ops import pool_capacity
from ployz.runtime.errors import RuntimeFailure
from ployz.runtime.model import LABEL_NAMESPACE
from ployz.zfs.errors import ZFSError


def collect_facts(context: AgentContext) -> dict[str, Any]:
    """Blocking (asks ZFS and Docker): run it in a worker thread."""
    facts: dict[str, Any] = {
        "machine_id": context.machine_id,
        "address": context.address,
        "started_ms": context.started_ms,
        "reported_ms": now_ms(),
        "pool": context.pool,
        "pool_free": None,
        "pool_used": None,
        "containers": None,
        "problems": [],
    }
    if context.pool is not None:
        try:
            capacity = pool_capacity(context.pool)
            facts["pool_free"], facts["pool_used"] = capacity.free, capacity.used
        except ZFSError as exc:
            facts["problems"].append(f"zfs: {exc}")
    try:
        facts["containers"] = len(context.runtime.list({LABEL_NAMESPACE: None}))
    except RuntimeFailure as exc:
        facts["problems"].append(f"docker: {exc}")
    return facts
