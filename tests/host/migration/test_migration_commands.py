"""``ployzctl migrate`` as a subprocess against a real SQLite control plane: render-manifest
prints what ``deploy preview -f -`` reads, and every refusal exits non-zero, says what is wrong
and writes nothing. (Moving data needs ZFS and two agents: see tests/e2e/test_migrate.py.)"""

from __future__ import annotations

import json

import pytest

from ployz.control import PutService, PutVolume, Volume, deploy_lock_name
from ployz.deploy.manifest import parse_manifest
from ployz.deploy.specs import service_fact
from tests.host.deploy.deploy_cluster import GIB, Cluster

pytestmark = pytest.mark.host

DEPLOYED = parse_manifest("""
namespace = "shop"
[[volumes]]
name = "db"
quota = "1G"
owner = "machine-a"
[[services]]
name = "db"
placement = "machine-a"
[services.template]
image = "ployz-test/busybox:latest"
command = "sh -c 'sleep 600'"
mounts = { db = "/data" }
""", "deploy.toml")


@pytest.fixture
def deployed(cluster: Cluster) -> Cluster:
    with cluster.plane() as cp:
        lease = cp.acquire(deploy_lock_name("shop"), "seed", 60)
        cp.commit("shop", lease.token, [
            PutVolume(volume=Volume(namespace="shop", name="db", dataset="machine-a/shop.db",
                                    owner="machine-a", quota=GIB)),
            PutService(service=service_fact("shop", DEPLOYED.services[0])),
        ])
        cp.release(deploy_lock_name("shop"), lease.token)
    return cluster


def test_render_manifest_is_accepted_by_deploy_preview(deployed: Cluster) -> None:
    before = deployed.dump()
    rendered = deployed.ployzctl("migrate", "render-manifest", "shop/db", "--to", "machine-b")
    assert rendered.returncode == 0, rendered.stderr
    assert '[intent.volumes.db.move]\nfrom_machine = "machine-a"\nto_machine = "machine-b"' \
        in rendered.stdout
    shown = deployed.ployzctl("deploy", "preview", "-f", "-", "--json", stdin=rendered.stdout)
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)
    assert [(v["kind"], v["source"], v["machine"]) for v in plan["volumes"]] == [
        ("move", "machine-a", "machine-b")]
    as_json = deployed.ployzctl("migrate", "render-manifest", "shop/db", "--to", "machine-b",
                                "--json")
    assert parse_manifest(as_json.stdout, "json") == parse_manifest(rendered.stdout, "toml")
    assert deployed.dump() == before


@pytest.mark.parametrize("command", ["preview", "render-manifest", "apply"])
@pytest.mark.parametrize(
    ("ref", "to", "status", "message"),
    [("shop", "machine-b", 2, "malformed service reference 'shop': no '/'"),
     ("shop/Db", "machine-b", 2, "service 'Db' is not"),
     ("shop/nope", "machine-b", 1, "unknown service shop/nope (services of namespace 'shop': "
                                   "db)"),
     ("shop/db", "machine-z", 1, "--to: unknown machine 'machine-z' (known machines: "
                                 "machine-a, machine-b, machine-c)"),
     ("shop/db", "machine-a", 1, "service shop/db already runs on 'machine-a'")],
)
def test_bad_input_is_refused_and_changes_nothing(deployed: Cluster, command: str, ref: str,
                                                  to: str, status: int, message: str) -> None:
    before = deployed.dump()
    done = deployed.ployzctl("migrate", command, ref, "--to", to)
    assert done.returncode == status, done.stderr
    assert message in done.stderr
    assert done.stdout == ""
    assert deployed.dump() == before


@pytest.mark.parametrize("command", ["preview", "apply"])
def test_a_draining_target_is_refused(deployed: Cluster, command: str) -> None:
    before = deployed.dump()
    done = deployed.ployzctl("migrate", command, "shop/db", "--to", "machine-c", "--json")
    assert done.returncode == 1
    assert "machine 'machine-c' is draining and takes no new placements" in done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "MachineDraining"
    assert deployed.dump() == before
