"""After a commit, until every live machine's agent has applied its routing.

A commit changes where a service's address is routed; each machine's agent applies that
(WireGuard peers, routes, DNS, gateway) and acknowledges the namespace's commit number in the
control plane (:meth:`~ployz.control.ControlPlane.acknowledge_routes`). A run waits for the
acknowledgements of every machine that is alive (heartbeated within
:data:`~ployz.deploy.inspect.LIVENESS_WINDOW`) before it removes the old instance and reports
done, for at most its agents' ``route_wait_s``: a machine that did not confirm by then is named,
not waited for (the commit stands; that machine's agent applies it when it can).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ployz.control.models import utcnow
from ployz.control.plane import ControlPlane
from ployz.deploy.inspect import liveness

_POLL_S = 1.0
"""Longest wait between two reads of the acknowledgements (a watch usually wakes sooner)."""


@dataclass(frozen=True)
class RouteConfirmation:
    namespace: str
    version: int
    """The commit whose routing was waited for."""
    confirmed: tuple[str, ...]
    missing: tuple[str, ...]
    """Live machines that had not acknowledged it when the wait ended."""
    seconds: float


def wait_for_routes(cp: ControlPlane, namespace: str, version: int,
                    timeout_s: float) -> RouteConfirmation:
    started = time.monotonic()
    deadline = started + timeout_s
    watch = cp.watch_route_acks()
    try:
        while True:
            now = utcnow()
            live = {m.id for m in cp.list_machines() if liveness(m, now) == "alive"}
            acks = cp.route_acks()
            confirmed = sorted(m for m in live if m in acks
                               and acks[m].namespaces.get(namespace, 0) >= version)
            missing = sorted(live - set(confirmed))
            remaining = deadline - time.monotonic()
            if not missing or remaining <= 0:
                return RouteConfirmation(namespace, version, tuple(confirmed), tuple(missing),
                                         round(time.monotonic() - started, 3))
            watch.wait(min(remaining, _POLL_S))
    finally:
        watch.close()
