"""``ployzctl migrate`` in the sandbox: a service appending numbered lines to its volume moves
from machine-a to machine-b while it writes; every line written before the fence is on the
target, the service runs there and nowhere else, and the control plane says so. Then the
migrations refused before they change anything (failures after that start are in
test_migrate_failures.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.control import deploy_lock_name, open_control_plane
from ployz.sandbox.cluster import Cluster
from tests.e2e.sandbox_operator import agent, dump, ployzctl
from tests.e2e.writer_service import (
    apply_events,
    containers,
    continued_lines,
    deploy_writer,
    lines,
    log_path,
)

# Booting the sandbox counts against the first test's time, and every container start costs
# seconds under emulation.
pytestmark = pytest.mark.timeout(1800)

ESTIMATE_FIELDS = {"initial_bytes", "final_bytes", "seconds", "window_seconds",
                   "link_bytes_per_s", "write_bytes_per_s"}


@pytest.fixture(scope="module")
def moved(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The writer of namespace ``shop`` deployed on machine-a, previewed, then migrated."""
    source_log = deploy_writer(cluster, tmp_path_factory.mktemp("shop"), "shop")
    before = dump(cluster)
    plan_file = tmp_path_factory.mktemp("plan") / "move.json"
    preview = ployzctl(cluster, "migrate", "preview", "shop/writer", "--to", "machine-b",
                       "--json", "--out", str(plan_file))
    preview_dump = dump(cluster)
    with agent(cluster, cluster.machines[0]) as client:
        snapshots_after_preview = client.zfs.snapshots("machine-a/shop.data")
    rendered = ployzctl(cluster, "migrate", "render-manifest", "shop/writer", "--to",
                        "machine-b")
    rendered_preview = ployzctl(cluster, "deploy", "preview", "-f", "-", stdin=rendered.stdout)
    status, events, stderr = apply_events(cluster, "shop/writer", "--to", "machine-b",
                                          "--keep-source")
    yield {"preview": preview, "before": before, "after_preview": preview_dump,
           "snapshots_after_preview": snapshots_after_preview, "rendered": rendered,
           "rendered_preview": rendered_preview, "plan_file": plan_file,
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
    estimate = plan["estimate"]
    assert set(estimate) >= ESTIMATE_FIELDS
    assert estimate["initial_bytes"] == volume["initial_send"]
    # Sampled, not guessed; a few bytes a second may not show within the sample (ZFS counts
    # ``written`` as transaction groups reach the disk).
    assert estimate["write_bytes_per_s"] is not None and estimate["write_bytes_per_s"] >= 0
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
    assert set(done["estimate"]) == ESTIMATE_FIELDS and set(done["actual"]) == ESTIMATE_FIELDS
    assert done["actual"]["window_seconds"] == done["cutover_s"]["total"]
    full = next(e for e in events if e["event"] == "transfer" and e["state"] == "done")
    assert done["actual"]["initial_bytes"] == full["bytes"]
    print("estimate:", done["estimate"], "actual:", done["actual"])
    assert set(done["cutover_s"]) == {"stop", "final_snapshot", "final_send", "start", "ready",
                                      "total"}
    assert done["cutover_s"]["total"] < done["seconds"]
    print("cutover window (s):", done["cutover_s"], "whole run (s):", done["seconds"])

    # The source container stopped before the final snapshot: its log is final and complete.
    after = continued_lines(log_path(cluster.machines[1], "shop"), lines(moved["source_log"]))
    assert after == list(range(1, len(after) + 1))


def test_service_runs_on_the_target_only(cluster: Cluster, moved: dict) -> None:
    assert moved["status"] == 0, moved["stderr"]
    assert containers(cluster, cluster.machines[0], "shop") == []
    (running,) = containers(cluster, cluster.machines[1], "shop")
    assert running.state == "running"
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
        assert a.zfs.snapshots("machine-a/shop.data") == []
        assert b.zfs.snapshots("machine-b/shop.data") == []
        assert a.zfs.exists("machine-a/shop.data")  # --keep-source
        # the volume's quota moved with it
        assert b.zfs.get("machine-b/shop.data", ["quota"]) == {"quota": 256 << 20}


def test_moving_back_onto_a_kept_source_dataset_is_refused(cluster: Cluster,
                                                           moved: dict) -> None:
    before = dump(cluster)
    status, _, stderr = apply_events(cluster, "shop/writer", "--to", "machine-a")
    assert status != 0
    assert "machine-a/shop.data already exists" in stderr
    assert dump(cluster) == before


def test_a_saved_plan_is_refused_once_another_apply_moved_the_volume(
        cluster: Cluster, moved: dict) -> None:
    """The preview's plan was made with the service on machine-a; the apply since moved it."""
    before = dump(cluster)
    status, _, stderr = apply_events(cluster, "shop/writer", "--to", "machine-b", "--plan",
                                     str(moved["plan_file"]))
    assert status != 0
    assert "the plan no longer holds, nothing was changed" in stderr
    assert "shop/writer runs on machine-b now; the plan moves it from machine-a" in stderr
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
    assert [c.state for c in containers(cluster, cluster.machines[0], "locked")] == [
        "running"]


VOLUMES = ("data", "data2", "data3")


def test_a_service_with_three_volumes_moves_them_all_at_once(cluster: Cluster,
                                                             tmp_path: Path) -> None:
    """Each volume holds 24 MiB of its own fill: the three full sends run at the same time (all
    started before the first ends), and each fill arrives whole on machine-b."""
    deploy_writer(cluster, tmp_path, "multi", fill_mib=24, volumes=VOLUMES, quota="64M")
    a, b = cluster.machines[0], cluster.machines[1]
    digests = {v: digest(a.home / "pool" / f"multi.{v}" / "fill") for v in VOLUMES}

    status, events, stderr = apply_events(cluster, "multi/writer", "--to", "machine-b")
    assert status == 0, stderr
    fulls = [(e["state"], e["volume"]) for e in events
             if e["event"] == "transfer" and e.get("kind") == "full"
             and e["state"] in ("started", "done")]
    first_done = next(i for i, (state, _) in enumerate(fulls) if state == "done")
    assert {v for state, v in fulls[:first_done] if state == "started"} == set(VOLUMES)
    state = json.loads(ployzctl(cluster, "service", "ls", "--json").stdout)
    (moved,) = [s for s in state if s["namespace"] == "multi"]
    assert moved["machine"] == "machine-b"
    assert sorted(v["dataset"] for v in moved["volumes"]) == [
        f"machine-b/multi.{v}" for v in VOLUMES]
    assert {v: digest(b.home / "pool" / f"multi.{v}" / "fill") for v in VOLUMES} == digests


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
