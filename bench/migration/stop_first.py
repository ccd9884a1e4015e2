"""The baseline: the migration a naive tool performs. It stops the service, takes one snapshot,
sends all of it, then creates and starts the container on the target; the service is down for
all of that. It goes through the same agents and the same transfer engine as ``migrate apply``,
so the two windows differ only by what pre-copy and the prepared container take out of it.

It does not touch the control plane: the benchmark throws the cluster away afterwards.
"""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.api import Agent
from ployz.deploy.manifest import parse_manifest
from ployz.deploy.migration.snapshot_send import send_snapshot
from ployz.deploy.migration.target import prepare_container
from ployz.runtime.model import ServiceAddress, service_labels

SNAPSHOT = "stop-first"
READY_TIMEOUT_S = 300.0


def migrate_stop_first(source: Agent, target: Agent, key: Ed25519PrivateKey,
                       manifest_text: str, source_pool: str, target_pool: str,
                       address: ServiceAddress) -> dict[str, Any]:
    """Moves the manifest's one service (with its stable ``address``) and volume from
    ``source`` to ``target``; returns the seconds of each step of the window and ``total``."""
    manifest = parse_manifest(manifest_text, "stop-first")
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
    return {"cutover_s": window, "seconds": window["total"], "bytes": received.bytes,
            "wire_bytes": received.wire_bytes, "codec": received.codec}
