"""A separate process that uses the control plane, for the multi-process contract tests.

python control_worker.py acquire URL LOCK HOLDER GATE_FILE
    connects, prints "ready", waits until GATE_FILE exists, tries to acquire LOCK once and
    prints one JSON line: {"holder": ..., "token": N} or {"holder": ..., "held_by": ...}.

python control_worker.py commit-loop URL NAMESPACE TOKEN MACHINE[,MACHINE...]
    commits forever, each time moving every volume, service and route of NAMESPACE to the
    next machine, with transfer evidence, as part of a deploy; prints each commit's number
    once it is acknowledged. The test kills it with SIGKILL at a random moment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ployz.control import (
    LockHeld,
    RecordTransfer,
    Route,
    SetPlacement,
    SetRoute,
    SetVolumeOwner,
    TransferEvidence,
    open_control_plane,
)
from ployz.control.models import utcnow


def acquire(url: str, lock: str, holder: str, gate: str) -> None:
    with open_control_plane(url) as cp:
        print("ready", flush=True)
        while not Path(gate).exists():
            time.sleep(0.001)
        try:
            lease = cp.acquire(lock, holder, ttl=60)
            print(json.dumps({"holder": holder, "token": lease.token}), flush=True)
        except LockHeld as held:
            print(json.dumps({"holder": holder, "held_by": held.holder}), flush=True)


def move_everything(
    namespace: str,
    state_volumes: list[str],
    state_services: list[str],
    source: str,
    target: str,
    round_: int,
) -> list:
    changes: list = []
    for volume in state_volumes:
        changes.append(SetVolumeOwner(volume=volume, owner=target))
        changes.append(
            RecordTransfer(
                evidence=TransferEvidence(
                    namespace=namespace,
                    volume=volume,
                    source=source,
                    target=target,
                    snapshot=f"ployz-move-{round_}-{volume}",
                    guid=round_,
                    received_guid=round_,
                    bytes=round_ * 4096,
                    checksum=f"xxh64:{round_:016x}",
                    acknowledged_at=utcnow(),
                )
            )
        )
    for service in state_services:
        changes.append(SetPlacement(service=service, machine=target))
        changes.append(SetRoute(route=Route(namespace=namespace, service=service, machine=target)))
    return changes


def commit_loop(url: str, namespace: str, token: int, machines: list[str]) -> None:
    with open_control_plane(url) as cp:
        state = cp.namespace(namespace)
        volumes, services = sorted(state.volumes), sorted(state.services)
        source = state.volumes[volumes[0]].owner
        round_ = state.commit_seq
        while True:
            round_ += 1
            target = machines[round_ % len(machines)]
            deploy = cp.begin_deploy(namespace, "migrate")
            changes = move_everything(namespace, volumes, services, source, target, round_)
            record = cp.commit(namespace, token, changes, deploy_id=deploy.id)
            print(record.seq, flush=True)
            source = target


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "acquire":
        acquire(*args)
    elif command == "commit-loop":
        url, namespace, token, machines = args
        commit_loop(url, namespace, int(token), machines.split(","))
    else:
        raise SystemExit(f"unknown command {command!r}")
