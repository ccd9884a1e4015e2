"""``ployzctl deploy preview``, ``deploy``, ``machine ls`` and ``service ls`` as subprocesses
against a real SQLite control plane; refusals must exit non-zero and write nothing."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ployz.control import PutService, PutVolume, Volume, deploy_lock_name
from ployz.deploy.manifest import parse_manifest, render
from ployz.deploy.specs import service_fact
from tests.host.deploy.deploy_cluster import GIB, Cluster

pytestmark = pytest.mark.host

MANIFEST = textwrap.dedent("""
    namespace = "shop"
    [[volumes]]
    name = "db"
    quota = "{quota}"
    owner = "{machine}"
    [[services]]
    name = "db"
    placement = "{machine}"
    [services.template]
    image = "ployz-test/busybox:latest"
    command = "sh -c 'sleep 600'"
    mounts = {{ db = "/data" }}
""")


def write_manifest(tmp_path: Path, machine: str = "machine-a", quota: str = "1G") -> str:
    path = tmp_path / "deploy.toml"
    path.write_text(MANIFEST.format(machine=machine, quota=quota))
    return str(path)


def seed_deployed(cluster: Cluster) -> None:
    """Commit the manifest's state as a finished deploy on machine-a would have."""
    manifest = parse_manifest(MANIFEST.format(machine="machine-a", quota="1G"), "deploy.toml")
    with cluster.plane() as cp:
        lease = cp.acquire(deploy_lock_name("shop"), "seed", 60)
        cp.commit("shop", lease.token, [
            PutVolume(volume=Volume(namespace="shop", name="db", dataset="machine-a/shop.db",
                                    owner="machine-a", quota=GIB, size=GIB // 4)),
            PutService(service=service_fact("shop", manifest.services[0])),
        ])
        cp.release(deploy_lock_name("shop"), lease.token)


def test_preview_prints_the_plan_and_changes_nothing(cluster: Cluster, tmp_path: Path):
    before = cluster.dump()
    shown = cluster.ployzctl("deploy", "preview", "-f", write_manifest(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert "volume   create  db    machine-a  quota 1.0G" in shown.stdout
    assert "service  start   db    machine-a  image ployz-test/busybox:latest" in shown.stdout
    assert "2 change(s)" in shown.stdout

    as_json = cluster.ployzctl("deploy", "preview", "-f", write_manifest(tmp_path), "--json")
    plan = json.loads(as_json.stdout)
    assert plan["changes_anything"] is True
    assert [(v["kind"], v["name"], v["machine"], v["quota"]) for v in plan["volumes"]] == [
        ("create", "db", "machine-a", GIB)
    ]
    assert plan["capacity"] == [{"machine": "machine-a", "pool_free": 3 * GIB, "needed": GIB}]
    assert cluster.dump() == before


def test_preview_accepts_a_rendered_move_manifest_on_stdin(cluster: Cluster):
    seed_deployed(cluster)
    moved = parse_manifest(MANIFEST.format(machine="machine-b", quota="1G") + textwrap.dedent("""
        [intent.volumes.db.move]
        from_machine = "machine-a"
        to_machine = "machine-b"
    """), "deploy.toml")
    before = cluster.dump()
    shown = cluster.ployzctl("deploy", "preview", "-f", "-", "--json", stdin=render(moved))
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)
    assert [(v["kind"], v["source"], v["machine"]) for v in plan["volumes"]] == [
        ("move", "machine-a", "machine-b")
    ]
    assert plan["services"][0]["changes"] == ["placement"]
    assert cluster.dump() == before


def test_deploy_of_a_move_manifest_points_to_migrate_and_changes_nothing(cluster: Cluster):
    seed_deployed(cluster)
    moved = MANIFEST.format(machine="machine-b", quota="1G") + (
        '[intent.volumes.db.move]\nfrom_machine = "machine-a"\nto_machine = "machine-b"\n')
    before = cluster.dump()
    refused = cluster.ployzctl("deploy", "-f", "-", stdin=moved)
    assert refused.returncode == 1
    assert "ployzctl migrate apply" in refused.stderr
    assert cluster.dump() == before


@pytest.mark.parametrize("command", [("deploy", "preview"), ("deploy",)])
def test_bad_manifest_names_file_and_field(cluster: Cluster, tmp_path: Path, command):
    path = tmp_path / "bad.toml"
    path.write_text(MANIFEST.format(machine="machine-a", quota="1G").replace(
        'image = "ployz-test/busybox:latest"', ""))
    before = cluster.dump()
    refused = cluster.ployzctl(*command, "-f", str(path))
    assert refused.returncode == 2
    assert f"{path}: invalid deploy manifest" in refused.stderr
    assert "services[0].template.image: field required" in refused.stderr

    as_json = cluster.ployzctl(*command, "-f", str(path), "--json")
    error = json.loads(as_json.stdout)["error"]
    assert error["type"] == "ManifestError"
    assert error["issues"] == [{"path": "services[0].template.image",
                                "message": "field required"}]
    assert cluster.dump() == before


@pytest.mark.parametrize("command", [("deploy", "preview"), ("deploy",)])
def test_unknown_machine_is_refused_and_changes_nothing(cluster: Cluster, tmp_path: Path,
                                                        command):
    before = cluster.dump()
    refused = cluster.ployzctl(*command, "-f", write_manifest(tmp_path, machine="machine-x"))
    assert refused.returncode == 1
    assert ("volumes[0].owner: unknown machine 'machine-x' "
            "(known machines: machine-a, machine-b, machine-c)") in refused.stderr
    assert cluster.dump() == before


@pytest.mark.parametrize("command", [("deploy", "preview"), ("deploy",)])
def test_full_pool_is_refused_and_changes_nothing(cluster: Cluster, tmp_path: Path, command):
    before = cluster.dump()
    refused = cluster.ployzctl(*command, "-f",
                               write_manifest(tmp_path, machine="machine-b", quota="2G"))
    assert refused.returncode == 1
    assert "machine 'machine-b' has 1.0G (1073741824 bytes) free" in refused.stderr
    assert "reserve 2.0G" in refused.stderr
    assert cluster.dump() == before


def test_draining_machine_is_refused_and_changes_nothing(cluster: Cluster, tmp_path: Path):
    before = cluster.dump()
    refused = cluster.ployzctl("deploy", "-f", write_manifest(tmp_path, machine="machine-c"))
    assert refused.returncode == 1
    assert "machine 'machine-c' is draining" in refused.stderr
    assert cluster.dump() == before


def test_missing_control_plane_is_a_configuration_error(cluster: Cluster, tmp_path: Path):
    refused = cluster.ployzctl("machine", "ls",
                               env={"PLOYZ_CONTROL": f"sqlite:///{tmp_path / 'nowhere.db'}"})
    assert refused.returncode == 2
    assert "no control plane at" in refused.stderr
    assert not (tmp_path / "nowhere.db").exists()


def test_deploy_without_a_key_is_a_configuration_error(cluster: Cluster, tmp_path: Path):
    refused = cluster.ployzctl("deploy", "-f", write_manifest(tmp_path), env={"PLOYZ_KEY": ""})
    assert refused.returncode == 2
    assert "no operator key: give --key PATH or set $PLOYZ_KEY" in refused.stderr


def test_machine_ls_lists_every_machine(cluster: Cluster):
    before = cluster.dump()
    listed = cluster.ployzctl("machine", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    machines = json.loads(listed.stdout)
    assert [m["id"] for m in machines] == ["machine-a", "machine-b", "machine-c"]
    a = machines[0]
    assert (a["lifecycle"], a["overlay_ip"], a["pool_free"], a["pool_used"]) == (
        "active", "10.210.0.2", 3 * GIB, GIB)
    assert a["last_heartbeat"] is not None and a["liveness"] == "alive"
    assert machines[2]["lifecycle"] == "draining"

    table = cluster.ployzctl("machine", "ls")
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "LIFECYCLE", "LIVENESS", "OVERLAY", "IP", "SUBNET",
                              "ENDPOINT", "POOL", "FREE", "POOL", "USED", "CONTAINERS", "LAST",
                              "HEARTBEAT"]
    assert rows[1].split()[:9] == ["machine-b", "active", "alive", "10.210.0.3",
                                   machines[1]["subnet"], "-", "1.0G", "3.0G", "1"]
    assert rows[2].split()[1] == "draining"
    assert cluster.dump() == before


def test_service_ls_shows_services_with_their_volumes(cluster: Cluster):
    empty = cluster.ployzctl("service", "ls", "--json")
    assert json.loads(empty.stdout) == []
    seed_deployed(cluster)
    listed = cluster.ployzctl("service", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    [service] = json.loads(listed.stdout)
    assert (service["namespace"], service["name"], service["machine"], service["image"]) == (
        "shop", "db", "machine-a", "ployz-test/busybox:latest")
    assert service["volumes"] == [{"name": "db", "path": "/data", "owner": "machine-a",
                                   "dataset": "machine-a/shop.db"}]
    assert service["commit"] == 1
    # Seeded as facts, not deployed: no address was given (a deploy gives one).
    assert service["address"] is None
    assert service["dns"] == "db.shop.ployz.internal" and service["http_host"] is None

    table = cluster.ployzctl("service", "ls", "--namespace", "shop")
    assert table.stdout.splitlines()[1].split() == [
        "shop", "db", "machine-a", "-", "-", "ployz-test/busybox:latest",
        "db:/data", "1"]
