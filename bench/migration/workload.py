"""The service a migration benchmark moves: it fills its volume to the size under test, then
writes continuously (a numbered line and a 64 KiB random block every ~0.1 s) so that every
pre-copy round has new data to carry and the final delta is never empty. It also serves HTTP on
port 8080 (gateway host ``<namespace>.bench``): ``/instance`` answers its container's hostname,
so a client on another machine sees which instance answered (see :mod:`ployz.sandbox.watch`).

Its readiness check passes once the container has written since it started (the marker is in
the container's own /tmp, not in the volume), so "ready" means the service answers again; the
first container is ready at once, so that its deploy does not wait for the fill. The check's
time limit is generous: under emulation one `docker exec` of it can take seconds, and a check
that times out is a failed one (three in a row made the deploy fail as unhealthy). A longer
limit does not delay the first healthy answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ployz.runtime.testimage import TEST_IMAGE
from ployz.sandbox.cluster import Cluster, Machine

# A shell as PID 1 ignores SIGTERM unless it traps it, and the stop would wait for SIGKILL.
WRITER = ("trap 'exit 0' TERM; "
          "mkdir -p /tmp/www; hostname > /tmp/www/instance; httpd -p 8080 -h /tmp/www; "
          "[ -f /data/filled ] || {{ touch /tmp/up; for d in {dirs}; do dd if=/dev/urandom "
          "of=$d/fill bs=1M count={mib} 2>/dev/null; done; sync; touch /data/filled; }}; "
          "i=$(tail -n 1 /data/log 2>/dev/null); i=${{i:-0}}; "
          "while true; do i=$((i+1)); echo $i >> /data/log; for d in {dirs}; do "
          "dd if=/dev/urandom of=$d/churn bs=64k count=1 seek=$((i % 256)) conv=notrunc "
          "2>/dev/null; done; [ -f /tmp/up ] || touch /tmp/up; sleep 0.1; done")
"""Fills each volume with ``mib`` MiB, then writes 64 KiB to each of them every ~0.1 s."""

VOLUME = textwrap.dedent("""
    [[volumes]]
    name = "{name}"
    quota = "{quota}M"
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
    ports = [8080]
    [services.template.readiness]
    test = ["CMD-SHELL", "test -f /tmp/up"]
    interval_s = 0.5
    timeout_s = 15
    retries = 10
    [services.http]
    host = "{namespace}.bench"
    port = 8080
""")

FILL_TIMEOUT_S = 1800.0


def volume_names(volumes: int) -> list[str]:
    """The writer's volumes: ``data`` (its log's too), then ``data2``, ``data3``, ..."""
    return ["data", *(f"data{i}" for i in range(2, volumes + 1))]


def manifest(namespace: str, mib: int, volumes: int = 1) -> str:
    """The writer with ``volumes`` volumes of ``mib`` MiB each."""
    names = volume_names(volumes)
    dirs = " ".join(f"/{name}" for name in names)
    return MANIFEST.format(
        namespace=namespace, image=TEST_IMAGE,
        volumes="".join(VOLUME.format(name=name, quota=mib + 256) for name in names),
        mounts=", ".join(f'{name} = "/{name}"' for name in names),
        writer=json.dumps(WRITER.format(mib=mib, dirs=dirs)))


def _environment(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, **cluster.environment(), "PYTHONUNBUFFERED": "1"}


def ployzctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ployzctl", *args], capture_output=True,
                          text=True, env=_environment(cluster), check=False)


@dataclass(frozen=True)
class Timed:
    """A ``--json`` command's events, and when each phase began, in seconds from its start:
    for each service a drain moves (under its name; its ``drain`` is when its move began), and
    for a single migration (under ``""``)."""

    events: list[dict[str, Any]]
    at_s: list[float]
    """When each event was read, in seconds from the command's start."""
    moves_s: dict[str, dict[str, float]]
    stderr: str
    returncode: int

    @property
    def phases_s(self) -> dict[str, float]:
        return self.moves_s.get("", {})


def ployzctl_timed(cluster: Cluster, *args: str) -> Timed:
    """Runs ``ployzctl ... --json``, reading its events as they are printed: where the run's
    time outside the sends and the cutover goes (its lock, plan, container creation, commit,
    cleanup) shows only in when its phases began."""
    started = time.monotonic()
    events: list[dict[str, Any]] = []
    at_s: list[float] = []
    moves: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
            [sys.executable, "-m", "ployzctl", *args], stdout=subprocess.PIPE, stderr=errors,
            text=True, env=_environment(cluster),
    ) as command:
        assert command.stdout is not None
        for line in command.stdout:
            event = json.loads(line)
            events.append(event)
            at_s.append(round(time.monotonic() - started, 3))
            kind = event.get("event")
            if kind in ("drain", "phase", "done"):
                moves.setdefault(event.get("service", ""), {}).setdefault(
                    event.get("phase", kind), at_s[-1])
        returncode = command.wait()
        errors.seek(0)
        return Timed(events, at_s, moves, errors.read(), returncode)


def deploy(cluster: Cluster, namespace: str, mib: int, work: Path, volumes: int = 1) -> None:
    """Deploys the writer on machine-a and returns once each of its volumes holds ``mib`` MiB
    and it writes continuously."""
    path = work / f"{namespace}.toml"
    path.write_text(manifest(namespace, mib, volumes))
    done = ployzctl(cluster, "deploy", "-f", str(path))
    if done.returncode != 0:
        raise RuntimeError(f"deploying {namespace} failed: {done.stderr.strip()}")
    volume = volume_path(cluster.machines[0], namespace)
    deadline = time.monotonic() + FILL_TIMEOUT_S
    while not ((volume / "filled").exists() and _lines(volume / "log") > 10):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{namespace}'s writer did not fill {mib} MiB in "
                               f"{FILL_TIMEOUT_S:.0f} s")
        time.sleep(1)


def volume_path(machine: Machine, namespace: str) -> Path:
    return machine.home / "pool" / f"{namespace}.data"


def _lines(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0
