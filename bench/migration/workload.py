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
import textwrap
import time
from pathlib import Path

from ployz.runtime.testimage import TEST_IMAGE
from ployz.sandbox.cluster import Cluster, Machine

# A shell as PID 1 ignores SIGTERM unless it traps it, and the stop would wait for SIGKILL.
WRITER = ("trap 'exit 0' TERM; "
          "mkdir -p /tmp/www; hostname > /tmp/www/instance; httpd -p 8080 -h /tmp/www; "
          "[ -f /data/filled ] || {{ touch /tmp/up; dd if=/dev/urandom of=/data/fill bs=1M "
          "count={mib} 2>/dev/null; sync; touch /data/filled; }}; "
          "i=$(tail -n 1 /data/log 2>/dev/null); i=${{i:-0}}; "
          "while true; do i=$((i+1)); echo $i >> /data/log; "
          "dd if=/dev/urandom of=/data/churn bs=64k count=1 seek=$((i % 256)) conv=notrunc "
          "2>/dev/null; [ -f /tmp/up ] || touch /tmp/up; sleep 0.1; done")

MANIFEST = textwrap.dedent("""
    namespace = "{namespace}"
    [[volumes]]
    name = "data"
    quota = "{quota}M"
    owner = "machine-a"
    [[services]]
    name = "writer"
    placement = "machine-a"
    [services.template]
    image = "{image}"
    command = ["sh", "-c", {writer}]
    mounts = {{ data = "/data" }}
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


def manifest(namespace: str, mib: int) -> str:
    return MANIFEST.format(namespace=namespace, quota=mib + 256, image=TEST_IMAGE,
                           writer=json.dumps(WRITER.format(mib=mib)))


def ployzctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ployzctl", *args], capture_output=True,
                          text=True, env={**os.environ, **cluster.environment()}, check=False)


def deploy(cluster: Cluster, namespace: str, mib: int, work: Path) -> None:
    """Deploys the writer on machine-a and returns once its volume holds ``mib`` MiB and it
    writes continuously."""
    path = work / f"{namespace}.toml"
    path.write_text(manifest(namespace, mib))
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
