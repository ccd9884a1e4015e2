"""``ployzctl deploy`` in the sandbox: a service with a volume lands on its machine and writes to a
real ZFS dataset; a bad manifest, an unknown machine and a full pool are refused with a clear
error and leave the cluster as it was."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from ployz.runtime.testimage import TEST_IMAGE
from ployz.sandbox.cluster import Cluster
from tests.e2e.sandbox_operator import dump, ployzctl

MANIFEST = textwrap.dedent("""
    namespace = "{namespace}"
    [[volumes]]
    name = "data"
    quota = "{quota}"
    owner = "{machine}"
    [[services]]
    name = "counter"
    placement = "{machine}"
    [services.template]
    image = "{image}"
    mounts = {{ data = "/data" }}
    command = ["sh", "-c", {script}]
""")
COUNTER = "i=0; while true; do i=$((i+1)); echo $i >> /data/count; sleep 0.2; done"


def manifest(tmp_path: Path, namespace: str, machine: str = "machine-a",
             quota: str = "64M") -> Path:
    path = tmp_path / f"{namespace}.toml"
    path.write_text(MANIFEST.format(namespace=namespace, machine=machine, quota=quota,
                                    image=TEST_IMAGE, script=json.dumps(COUNTER)))
    return path


def test_deploy_runs_the_service_on_its_volume(cluster: Cluster, tmp_path: Path) -> None:
    done = ployzctl(cluster, "deploy", "-f", str(manifest(tmp_path, "counting")))
    assert done.returncode == 0, done.stderr
    count = cluster.machines[0].home / "pool" / "counting.data" / "count"
    deadline = time.monotonic() + 120
    while not (count.exists() and len(count.read_text().split()) >= 3):
        assert time.monotonic() < deadline, f"the container wrote nothing to {count}"
        time.sleep(1)

    services = json.loads(ployzctl(cluster, "service", "ls", "--json").stdout)
    (counter,) = [s for s in services if s["namespace"] == "counting"]
    assert counter["machine"] == "machine-a"
    assert counter["volumes"][0]["dataset"] == "machine-a/counting.data"
    machines = machines_once_counted(cluster, "machine-a")
    assert machines["machine-a"]["containers"] >= 1
    assert machines["machine-a"]["pool_used"] > 0 and machines["machine-a"]["pool_free"] > 0
    assert {"id", "lifecycle", "overlay_ip", "pool_free", "pool_used",
            "last_heartbeat"} <= set(machines["machine-b"])


def machines_once_counted(cluster: Cluster, machine: str) -> dict[str, dict]:
    """``machine ls`` once ``machine`` reports a container: the count is the agent's heartbeat
    fact, so it lags a started container by up to one heartbeat interval (10 s)."""
    deadline = time.monotonic() + 60
    while True:
        listed = json.loads(ployzctl(cluster, "machine", "ls", "--json").stdout)
        machines = {m["id"]: m for m in listed}
        if machines[machine]["containers"] >= 1 or time.monotonic() > deadline:
            return machines
        time.sleep(1)


@pytest.mark.parametrize(("case", "status", "message"), [
    ("bad manifest", 2, "services[0].template.image"),
    ("unknown machine", 1, "machine-z"),
    ("full pool", 1, "machine-a"),
])
def test_refused_deploys_change_nothing(cluster: Cluster, tmp_path: Path, case: str,
                                        status: int, message: str) -> None:
    if case == "bad manifest":
        path = manifest(tmp_path, "broken")
        path.write_text(path.read_text().replace(f'image = "{TEST_IMAGE}"', ""))
    elif case == "unknown machine":
        path = manifest(tmp_path, "lost", machine="machine-z")
    else:
        path = manifest(tmp_path, "huge", quota="64G")
    before = dump(cluster)
    done = ployzctl(cluster, "deploy", "-f", str(path))
    assert done.returncode == status, done.stderr
    assert message in done.stderr
    assert dump(cluster) == before
