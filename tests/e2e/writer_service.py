"""The service the migration tests move: a busybox shell appending consecutive numbers to a log on
its volume, behind a file of incompressible fill that sets how much data pre-copy carries. A
line on the source is a write the service acknowledged, so "every line written before the fence
is on the target" is the migration's promise made checkable."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

from ployz.runtime.model import ContainerInfo, service_labels
from ployz.runtime.testimage import TEST_IMAGE
from ployz.sandbox.cluster import Cluster, Machine
from tests.e2e.sandbox_operator import agent, ployzctl

VOLUME = textwrap.dedent("""
    [[volumes]]
    name = "{name}"
    quota = "{quota}"
    owner = "machine-a"
""")

MANIFEST = textwrap.dedent("""
    namespace = "{namespace}"
    {volumes}
    [[services]]
    name = "writer"
    placement = "machine-a"
    [services.template]
    image = "{image}"
    command = ["sh", "-c", {writer}]
    mounts = {{ {mounts} }}
""")


def writer_command(fill_mib: int, churn_mib: int = 0, volumes: tuple[str, ...] = ("data",)) -> str:
    """Resumes the numbering where the log ends, so the lines stay consecutive across machines;
    ``fill_mib`` MiB of incompressible data make pre-copy carry more than the final send; exits
    on SIGTERM (a shell as PID 1 ignores it, and the stop would wait for its SIGKILL). Five
    lines a second: each line is synced, and under emulation a sync costs every other process
    on the machine, so a faster writer slows the whole suite for no stronger check. With
    ``churn_mib``, each line also rewrites that many MiB of random data: a service writing as
    fast as the machine can. Each of ``volumes`` gets its own fill; the log is on the first."""
    churn = (f"dd if=/dev/urandom of=/data/churn bs=1M count={churn_mib} conv=notrunc "
             "2>/dev/null; " if churn_mib else "")
    fills = "".join(f"[ -f /{v}/fill ] || dd if=/dev/urandom of=/{v}/fill bs=1M "
                    f"count={fill_mib} 2>/dev/null; " for v in volumes)
    return ("trap 'exit 0' TERM; " + fills +
            "i=$(tail -n 1 /data/log 2>/dev/null); i=${i:-0}; "
            f"while true; do i=$((i+1)); echo $i >> /data/log; {churn}sync; sleep 0.2; done")


def log_path(machine: Machine, namespace: str) -> Path:
    """The writer's log as the operator sees it, where ``machine`` mounts the volume."""
    return machine.home / "pool" / f"{namespace}.data" / "log"


def deploy_writer(cluster: Cluster, tmp_path: Path, namespace: str, fill_mib: int = 32,
                  churn_mib: int = 0, volumes: tuple[str, ...] = ("data",),
                  quota: str = "256M") -> Path:
    """Deploys the writer on machine-a with ``volumes`` (each of ``quota``, mounted at
    ``/<name>``); returns its log file once it has lines, so every fill is complete."""
    path = tmp_path / f"{namespace}.toml"
    path.write_text(MANIFEST.format(
        namespace=namespace, image=TEST_IMAGE,
        volumes="".join(VOLUME.format(name=v, quota=quota) for v in volumes),
        mounts=", ".join(f'{v} = "/{v}"' for v in volumes),
        writer=json.dumps(writer_command(fill_mib, churn_mib, volumes))))
    done = ployzctl(cluster, "deploy", "-f", str(path))
    assert done.returncode == 0, done.stderr
    a = cluster.machines[0]
    log = log_path(a, namespace)
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().split()) > 5):
        if time.monotonic() > deadline:
            states = [(c.name, c.state, c.exit_code)
                      for c in containers(cluster, a, namespace)]
            mounted = os.path.ismount(log.parent)
            raise AssertionError(f"the writer wrote nothing to {log} (mounted there: {mounted}; "
                                 f"containers: {states})")
        time.sleep(1)
    return log


def lines(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def continued_lines(log: Path, before_fence: list[int]) -> list[int]:
    """The lines of ``log`` (on the target) once the service has written there: it must keep
    every line written before the fence, in order, and go on from them."""
    deadline = time.monotonic() + 60
    while len(lines(log)) <= len(before_fence):
        assert time.monotonic() < deadline, f"the service does not write to {log}"
        time.sleep(1)
    after = lines(log)
    assert after[:len(before_fence)] == before_fence
    return after


def containers(cluster: Cluster, machine: Machine, namespace: str) -> list[ContainerInfo]:
    with agent(cluster, machine) as client:
        return client.containers.list(service_labels(namespace))


def apply_events(cluster: Cluster, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    done = ployzctl(cluster, "migrate", "apply", *args, "--json")
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr
