"""``ployzctl migrate`` in the sandbox: a service appending numbered lines to its volume moves
from machine-a to machine-b while it writes; every line written before the fence is on the
target, the service runs there and nowhere else, and the control plane says so. Then the ways a
migration can go wrong: a ployzctl killed at a phase boundary, a refused migration."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_operator import agent, dump, ployzctl

from ployz.control import deploy_lock_name, open_control_plane
from ployz.runtime.model import service_labels
from ployz.runtime.testimage import TEST_IMAGE
from ployz.sandbox.cluster import Cluster, Machine

# Booting the sandbox counts against the first test's time, and every container start costs
# seconds under emulation.
pytestmark = pytest.mark.timeout(1800)

# Resumes the numbering where the log ends, so the lines stay consecutive across machines; 32 MiB
# of incompressible data make pre-copy carry more than the final send; exits on SIGTERM (a shell
# as PID 1 ignores it, and the stop would wait for its SIGKILL).
WRITER = ("trap 'exit 0' TERM; "
          "[ -f /data/fill ] || dd if=/dev/urandom of=/data/fill bs=1M count=32 2>/dev/null; "
          "i=$(tail -n 1 /data/log 2>/dev/null); i=${i:-0}; "
          "while true; do i=$((i+1)); echo $i >> /data/log; sync; sleep 0.05; done")

MANIFEST = textwrap.dedent("""
    namespace = "{namespace}"
    [[volumes]]
    name = "data"
    quota = "256M"
    owner = "machine-a"
    [[services]]
    name = "writer"
    placement = "machine-a"
    [services.template]
    image = "{image}"
    command = ["sh", "-c", {writer}]
    mounts = {{ data = "/data" }}
""")


def deploy_writer(cluster: Cluster, tmp_path: Path, namespace: str) -> Path:
    """Deploys the writer on machine-a; returns its log file once it has lines."""
    path = tmp_path / f"{namespace}.toml"
    path.write_text(MANIFEST.format(namespace=namespace, image=TEST_IMAGE,
                                    writer=json.dumps(WRITER)))
    done = ployzctl(cluster, "deploy", "-f", str(path))
    assert done.returncode == 0, done.stderr
    a = cluster.machines[0]
    log = a.home / "pool" / f"{namespace}.data" / "log"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().split()) > 20):
        if time.monotonic() > deadline:
            states = [(c["name"], c["state"], c["exit_code"])
                      for c in containers(cluster, a, namespace)]
            mounted = os.path.ismount(log.parent)
            raise AssertionError(f"the writer wrote nothing to {log} (mounted there: {mounted}; "
                                 f"containers: {states})")
        time.sleep(1)
    return log


def lines(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def containers(cluster: Cluster, machine: Machine, namespace: str) -> list[dict[str, Any]]:
    with agent(cluster, machine) as client:
        return client.call("container.list", {"labels": service_labels(namespace)})


def apply_events(cluster: Cluster, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    done = ployzctl(cluster, "migrate", "apply", *args, "--json")
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


@pytest.fixture(scope="module")
def moved(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The writer of namespace ``shop`` deployed on machine-a, previewed, then migrated."""
    source_log = deploy_writer(cluster, tmp_path_factory.mktemp("shop"), "shop")
    before = dump(cluster)
    preview = ployzctl(cluster, "migrate", "preview", "shop/writer", "--to", "machine-b",
                       "--json")
    preview_dump = dump(cluster)
    with agent(cluster, cluster.machines[0]) as client:
        snapshots_after_preview = client.call("zfs.snapshots", {"dataset": "machine-a/shop.data"})
    rendered = ployzctl(cluster, "migrate", "render-manifest", "shop/writer", "--to",
                        "machine-b")
    rendered_preview = ployzctl(cluster, "deploy", "preview", "-f", "-", stdin=rendered.stdout)
    status, events, stderr = apply_events(cluster, "shop/writer", "--to", "machine-b",
                                          "--keep-source")
    yield {"preview": preview, "before": before, "after_preview": preview_dump,
           "snapshots_after_preview": snapshots_after_preview, "rendered": rendered,
           "rendered_preview": rendered_preview,
           "status": status, "events": events, "stderr": stderr, "source_log": source_log}


def test_preview_shows_the_plan_and_changes_nothing(moved: dict) -> None:
    assert moved["preview"].returncode == 0, moved["preview"].stderr
    plan = json.loads(moved["preview"].stdout)
    assert (plan["source"], plan["target"]) == ("machine-a", "machine-b")
    (volume,) = plan["volumes"]
    assert volume["name"] == "data" and volume["target_dataset"] == "machine-b/shop.data"
    assert volume["size"] >= 32 << 20 and volume["initial_send"] >= 32 << 20
    assert plan["target_pool"]["has_room"] is True
    assert plan["phases"] == ["lock", "pre-copy", "fence", "final-send", "start", "commit",
                              "cleanup"]
    assert plan["placement"] == {"service": "machine-b", "volumes": {"data": "machine-b"}}
    assert moved["after_preview"] == moved["before"]
    assert moved["snapshots_after_preview"] == []


def test_rendered_manifest_is_what_deploy_preview_reads(cluster: Cluster, moved: dict) -> None:
    assert moved["rendered"].returncode == 0, moved["rendered"].stderr
    text = moved["rendered"].stdout
    assert 'to_machine = "machine-b"' in text and 'from_machine = "machine-a"' in text
    shown = moved["rendered_preview"]
    assert shown.returncode == 0, shown.stderr
    assert "machine-a -> machine-b" in shown.stdout
    assert "run `ployzctl migrate apply`" in shown.stdout
    # The migration has committed since: the rendered state is now the cluster's.
    again = ployzctl(cluster, "deploy", "preview", "-f", "-", stdin=text)
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stderr


def test_apply_moves_the_service_with_every_line_written_before_the_fence(
        cluster: Cluster, moved: dict) -> None:
    assert moved["status"] == 0, moved["stderr"]
    events = moved["events"]
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases == ["lock", "pre-copy", "fence", "final-send", "start", "commit", "cleanup"]
    kinds = [e["kind"] for e in events if e["event"] == "transfer" and e["state"] == "done"]
    assert kinds[0] == "full" and kinds[-1] == "final"
    done = events[-1]
    assert done["event"] == "done" and done["target"] == "machine-b"
    assert set(done["cutover_s"]) == {"stop", "final_snapshot", "final_send", "start", "ready",
                                      "total"}
    assert done["cutover_s"]["total"] < done["seconds"]
    print("cutover window (s):", done["cutover_s"], "whole run (s):", done["seconds"])

    # The source container stopped before the final snapshot: its log is final and complete.
    before_fence = lines(moved["source_log"])
    target_log = cluster.machines[1].home / "pool" / "shop.data" / "log"
    deadline = time.monotonic() + 60
    while len(lines(target_log)) <= len(before_fence):
        assert time.monotonic() < deadline, "the service does not write on machine-b"
        time.sleep(1)
    after = lines(target_log)
    assert after[:len(before_fence)] == before_fence
    assert after == list(range(1, len(after) + 1))


def test_service_runs_on_the_target_only(cluster: Cluster, moved: dict) -> None:
    assert moved["status"] == 0, moved["stderr"]
    assert containers(cluster, cluster.machines[0], "shop") == []
    (running,) = containers(cluster, cluster.machines[1], "shop")
    assert running["state"] == "running"
    services = json.loads(ployzctl(cluster, "service", "ls", "--json").stdout)
    (writer,) = [s for s in services if s["namespace"] == "shop"]
    assert writer["machine"] == "machine-b" and writer["route"] == "machine-b"
    assert writer["volumes"][0]["owner"] == "machine-b"
    assert writer["volumes"][0]["dataset"] == "machine-b/shop.data"
    machines = json.loads(ployzctl(cluster, "machine", "ls", "--json").stdout)
    assert {m["id"]: m["lifecycle"] for m in machines} == {"machine-a": "active",
                                                           "machine-b": "active"}


def test_cleanup_leaves_no_migration_snapshot_or_hold(cluster: Cluster, moved: dict) -> None:
    assert moved["status"] == 0, moved["stderr"]
    with agent(cluster, cluster.machines[0]) as a, agent(cluster, cluster.machines[1]) as b:
        assert a.call("zfs.snapshots", {"dataset": "machine-a/shop.data"}) == []
        assert b.call("zfs.snapshots", {"dataset": "machine-b/shop.data"}) == []
        assert a.call("zfs.exists", {"name": "machine-a/shop.data"})  # --keep-source


def test_moving_back_onto_a_kept_source_dataset_is_refused(cluster: Cluster,
                                                           moved: dict) -> None:
    before = dump(cluster)
    status, _, stderr = apply_events(cluster, "shop/writer", "--to", "machine-a")
    assert status != 0
    assert "machine-a/shop.data already exists" in stderr
    assert dump(cluster) == before


def test_bad_input_is_refused_without_changes(cluster: Cluster, moved: dict) -> None:
    before = dump(cluster)
    for args, message in (
        (("shop", "--to", "machine-a"), "malformed service reference"),
        (("shop/nope", "--to", "machine-a"), "unknown service shop/nope"),
        (("shop/writer", "--to", "machine-z"), "unknown machine 'machine-z'"),
        (("shop/writer", "--to", "machine-b"), "already runs on 'machine-b'"),
    ):
        done = ployzctl(cluster, "migrate", "apply", *args)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
    assert dump(cluster) == before


def test_killed_at_the_fence_then_apply_again_completes(cluster: Cluster, tmp_path: Path,
                                                        moved: dict) -> None:
    log = deploy_writer(cluster, tmp_path, "kill")
    process = subprocess.Popen(
        ["ployzctl", "migrate", "apply", "kill/writer", "--to", "machine-b", "--json",
         "--keep-source"], stdout=subprocess.PIPE, text=True,
        env={**os.environ, **cluster.environment()})
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event == {"event": "phase", "phase": "fence"}:
            process.kill()
            break
    process.wait()
    assert process.returncode == -9

    status, events, stderr = apply_events(cluster, "kill/writer", "--to", "machine-b",
                                          "--keep-source")
    assert status == 0, stderr
    recovered = [e for e in events if e["event"] == "rolled-back"]
    assert len(recovered) == 1 and recovered[0]["left"] == []
    assert events[-1]["event"] == "done"
    assert containers(cluster, cluster.machines[0], "kill") == []
    assert [c["state"] for c in containers(cluster, cluster.machines[1], "kill")] == ["running"]
    before_fence = lines(log)
    target_log = cluster.machines[1].home / "pool" / "kill.data" / "log"
    deadline = time.monotonic() + 60
    while len(lines(target_log)) <= len(before_fence):
        assert time.monotonic() < deadline, "the service does not write on machine-b"
        time.sleep(1)
    assert lines(target_log)[:len(before_fence)] == before_fence


def test_a_lock_held_by_another_deploy_is_refused(cluster: Cluster, tmp_path: Path,
                                                  moved: dict) -> None:
    deploy_writer(cluster, tmp_path, "locked")
    with open_control_plane(cluster.control_url) as cp:
        lease = cp.acquire(deploy_lock_name("locked"), "operator@elsewhere", 600)
        try:
            before = dump(cluster)
            status, _, stderr = apply_events(cluster, "locked/writer", "--to", "machine-b")
            assert status == 1
            assert "lock 'deploy/locked' is held by 'operator@elsewhere'" in stderr
            assert dump(cluster) == before
        finally:
            cp.release(deploy_lock_name("locked"), lease.token)
    assert [c["state"] for c in containers(cluster, cluster.machines[0], "locked")] == [
        "running"]
