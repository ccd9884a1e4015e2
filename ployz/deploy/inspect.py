"""What ``ployzctl machine ls`` and ``service ls`` show: the control plane's facts as rows.

Rows are plain dicts with stable keys, the same for the table and for ``--json``, so scripts and
people read the same thing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from ployz.control.models import Machine, utcnow
from ployz.control.plane import ControlPlane
from ployz.net.names import service_name

LIVENESS_WINDOW = timedelta(seconds=30)
"""A machine whose last heartbeat is older than this is ``stale`` (agents beat every 10 s)."""

Liveness = Literal["alive", "stale", "never"]


def liveness(machine: Machine, now: datetime) -> Liveness:
    if machine.last_heartbeat is None:
        return "never"
    return "alive" if now - machine.last_heartbeat <= LIVENESS_WINDOW else "stale"


def machine_rows(cp: ControlPlane) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "id": m.id,
            "lifecycle": m.lifecycle,
            "liveness": liveness(m, now),
            "overlay_ip": m.overlay_ip,
            "subnet": m.subnet,
            "endpoint": m.endpoint,
            "pool_size": m.capacity.pool_size,
            "pool_free": m.capacity.pool_free,
            "pool_used": m.capacity.pool_used,
            "containers": m.capacity.containers,
            "last_heartbeat": m.last_heartbeat.isoformat() if m.last_heartbeat else None,
            "created": m.created.isoformat(),
        }
        for m in sorted(cp.list_machines(), key=lambda m: m.id)
    ]


def service_rows(cp: ControlPlane, namespace: str | None = None) -> list[dict[str, Any]]:
    """One row per service, with the volumes it mounts and where they live."""
    states = [cp.namespace(namespace)] if namespace else cp.list_namespaces()
    rows = []
    for state in sorted(states, key=lambda s: s.namespace):
        for name, service in sorted(state.services.items()):
            mounts = service.config.get("mounts", {})
            route = state.routes.get(name)
            rows.append({
                "namespace": state.namespace,
                "name": name,
                "machine": service.machine,
                "image": service.image,
                "volumes": [
                    {
                        "name": volume,
                        "path": path,
                        "owner": state.volumes[volume].owner if volume in state.volumes else None,
                        "dataset": (
                            state.volumes[volume].dataset if volume in state.volumes else None
                        ),
                    }
                    for volume, path in sorted(mounts.items())
                ],
                "route": route.machine if route else None,
                "address": service.address,
                "dns": service_name(state.namespace, name),
                "http_host": service.http.host if service.http else None,
                "commit": state.commit_seq,
            })
    return rows
