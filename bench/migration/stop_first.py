"""The baseline: the migration a naive tool performs. It stops the service, takes one snapshot,
sends all of it, then creates and starts the container on the target; the service is down for
all of that. It goes through the same agents and the same transfer engine as ``migrate apply``,
so the two windows differ only by what pre-copy and the prepared container take out of it.

Then it records the move in the control plane as ``migrate apply`` does (volume owner and
dataset, placement and route, under the namespace's lock) and waits for every machine's routing
to follow, so that a client on another machine sees both moves end the same way.
"""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.api import Agent
from ployz.control import (
    ControlPlane,
    PutService,
    PutVolume,
    Route,
    SetRoute,
    deploy_lock_name,
)
from ployz.deploy.manifest import parse_manifest
from ployz.deploy.migration.snapshot_send import send_snapshot
from ployz.deploy.migration.target import prepare_container
from ployz.deploy.routes import wait_for_routes
from ployz.deploy.specs import service_address
from ployz.runtime.model import service_labels

SNAPSHOT = "stop-first"
READY_TIMEOUT_S = 300.0


ROUTE_WAIT_S = 30.0


def commit_move(cp: ControlPlane, namespace: str, service: str, volume: str, target: str,
                dataset: str) -> dict[str, Any]:
    """The move as a commit, then the wait for the machines' routing; what the wait saw."""
    lock = deploy_lock_name(namespace)
    lease = cp.acquire(lock, "bench stop-first", 600)
    try:
        state = cp.namespace(namespace)
        changes = [
            PutVolume(volume=state.volumes[volume].model_copy(
                update={"owner": target, "dataset": dataset})),
            PutService(service=state.services[service].model_copy(update={"machine": target})),
            SetRoute(route=Route(namespace=namespace, service=service, machine=target))]
        seq = cp.commit(namespace, lease.token, changes).seq
    finally:
        cp.release(lock, lease.token)
    routes = wait_for_routes(cp, namespace, seq, ROUTE_WAIT_S)
    return {"version": routes.version, "confirmed": list(routes.confirmed),
            "missing": list(routes.missing), "seconds": routes.seconds}


def migrate_stop_first(cp: ControlPlane, source: Agent, target: Agent, key: Ed25519PrivateKey,
                       manifest_text: str, source_pool: str, target_pool: str,
                       target_id: str) -> dict[str, Any]:
    """Moves the manifest's one service and volume from ``source`` to ``target`` (machine
    ``target_id``) and commits it; returns the seconds of each step of the window and
    ``total``, and the routing's confirmation."""
    manifest = parse_manifest(manifest_text, "stop-first")
    address = service_address(cp, manifest.namespace, manifest.services[0].name)
    (manifest_service,) = manifest.services
    labels = service_labels(manifest.namespace, manifest_service.name)
    (running,) = source.containers.list(labels)
    (volume,) = manifest.volumes
    dataset = f"{manifest.namespace}.{volume.name}"
    window: dict[str, Any] = {}

    started = time.monotonic()
    mark = started

    def lap(step: str) -> None:
        nonlocal mark
        now = time.monotonic()
        window[step] = round(now - mark, 3)
        mark = now

    source.containers.stop(running.name)
    lap("stop")
    snapshot = f"{source_pool}/{dataset}@{SNAPSHOT}"
    source.zfs.snapshot([snapshot])
    lap("final_snapshot")
    sent = send_snapshot(source, target, key,
                         transfer_id=f"stop-first-{manifest.namespace}", snapshot=snapshot,
                         base=None, target_dataset=f"{target_pool}/{dataset}")
    lap("final_send")
    name = prepare_container(target, manifest, manifest_service.name,
                             f"stop-first-{manifest.namespace}", target_pool,
                             {volume.name: f"{target_pool}/{dataset}"}, address)
    lap("create")
    target.containers.start(name)
    lap("start")
    target.containers.wait_ready(name, timeout_s=READY_TIMEOUT_S)
    lap("ready")
    window["total"] = round(mark - started, 3)
    received = sent.received
    routes = commit_move(cp, manifest.namespace, manifest_service.name, volume.name, target_id,
                         f"{target_pool}/{dataset}")
    return {"cutover_s": window, "seconds": window["total"], "bytes": received.bytes,
            "wire_bytes": received.wire_bytes, "codec": received.codec, "routes": routes}
