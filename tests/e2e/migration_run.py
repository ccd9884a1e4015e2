"""A ``ployzctl migrate apply`` of the e2e writer service run in the background and read event by
event, and what its outcome must look like in the sandbox: shared by the modules that break
migrations on purpose."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ployz.control import deploy_lock_name, open_control_plane
from ployz.deploy.inspect import service_rows
from ployz.sandbox.cluster import Cluster, Machine
from tests.e2e.sandbox_operator import agent, ployzctl_process
from tests.e2e.writer_service import containers, continued_lines, lines, log_path

FINAL_SEND = {"event": "phase", "phase": "final-send"}


class Apply:
    """``ployzctl migrate apply NS/writer --to machine-b --json [OPTIONS]`` running in the
    background, read event by event so that a test can act at a chosen point of the run."""

    def __init__(self, cluster: Cluster, namespace: str, *options: str) -> None:
        self.source_log = log_path(cluster.machines[0], namespace)
        self.process = ployzctl_process(cluster, "migrate", "apply", f"{namespace}/writer",
                                        "--to", "machine-b", "--json", *options)
        self.events: list[dict[str, Any]] = []
        self.before_fence: list[int] | None = None
        """The source's log when the final send began: the writer was stopped at the fence,
        so these are all the lines it wrote on machine-a."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            self.events.append(event)
            if event == FINAL_SEND:
                self.before_fence = lines(self.source_log)
            yield event

    def finish(self) -> tuple[int, str]:
        """Reads the rest of the events; the exit status and stderr."""
        assert self.process.stderr is not None
        for _ in self:
            pass
        stderr = self.process.stderr.read()
        return self.process.wait(timeout=900), stderr

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]

    def until_data_flows(self) -> None:
        """Reads events until the full send has moved data (a progress sample with bytes), not
        just started: a break during the handshake is a reconnection, which resumes nothing.
        Fails the test if the run ends first."""
        for event in self:
            if (event.get("event"), event.get("kind")) == ("progress", "full") and event["bytes"]:
                return
        pytest.fail("the run's full send never moved any data")


def service(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The writer's row of ``ployzctl service ls --json`` (placement, route, volume owners),
    read in this process: a ployzctl start costs tens of seconds under emulation."""
    with open_control_plane(cluster.control_url) as cp:
        (writer,) = service_rows(cp, namespace)
    return writer


def lock_released(cluster: Cluster, namespace: str) -> bool:
    with open_control_plane(cluster.control_url) as cp:
        lease = cp.get_lease(deploy_lock_name(namespace))
    return lease is not None and lease.released


def dataset_exists(cluster: Cluster, machine: Machine, namespace: str) -> bool:
    with agent(cluster, machine) as client:
        return client.zfs.exists(f"{machine.pool}/{namespace}.data")


def assert_still_on_source(cluster: Cluster, namespace: str) -> None:
    """What an abort promises on machine-a and in the control plane: the service runs there
    again and owns its volume there, and the lock is free."""
    assert [c.state for c in containers(cluster, cluster.machines[0], namespace)] == [
        "running"]
    writer = service(cluster, namespace)
    assert (writer["machine"], writer["route"]) == ("machine-a", "machine-a")
    assert [v["owner"] for v in writer["volumes"]] == ["machine-a"]
    assert lock_released(cluster, namespace)


def assert_moved(cluster: Cluster, namespace: str, run: Apply,
                 before_fence: list[int] | None) -> None:
    """The migration is complete: machine-b owns the volume and runs the only container,
    machine-a kept nothing, no migration snapshot is left, the lock is free, and the service
    goes on from every line it wrote before the fence."""
    a, b = cluster.machines[:2]
    assert run.events[-1].get("event") == "done" and run.events[-1]["target"] == "machine-b"
    writer = service(cluster, namespace)
    assert (writer["machine"], writer["route"]) == ("machine-b", "machine-b")
    assert [(v["owner"], v["dataset"]) for v in writer["volumes"]] == [
        ("machine-b", f"machine-b/{namespace}.data")]
    assert containers(cluster, a, namespace) == []
    assert [c.state for c in containers(cluster, b, namespace)] == ["running"]
    assert not dataset_exists(cluster, a, namespace)
    with agent(cluster, b) as client:
        assert client.zfs.snapshots(f"machine-b/{namespace}.data") == []
    assert lock_released(cluster, namespace)
    assert before_fence, "no final send was seen: where the fence fell is unknown"
    continued_lines(log_path(b, namespace), before_fence)


def commits(cluster: Cluster, namespace: str) -> int:
    with open_control_plane(cluster.control_url) as cp:
        return len(cp.list_commits(namespace))
