"""What a migration refuses before it asks any agent anything, against a real SQLite control
plane: the service reference, the target machine, the service, a move to where it already runs,
a draining target; and the record a migration writes for whoever resumes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.control import (
    Capacity,
    ControlPlane,
    PutService,
    PutVolume,
    Volume,
    deploy_lock_name,
    open_control_plane,
)
from ployz.deploy.errors import MachineDraining, UnknownPlacement
from ployz.deploy.manifest import parse_manifest
from ployz.deploy.migration.errors import MalformedServiceRef, MigrationRefused
from ployz.deploy.migration.plan import moved_manifest
from ployz.deploy.migration.record import MigrationRecord, VolumeRecord, snapshot_name
from ployz.deploy.migration.ref import ServiceRef, parse_service_ref
from ployz.deploy.migration.settle import MIGRATION
from ployz.deploy.plan import make_plan
from ployz.deploy.run import unfinished
from ployz.deploy.specs import service_fact

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
image = "img:1"
mounts = { db = "/data" }
""", "deploy.toml")


@pytest.fixture
def cp(tmp_path: Path, register_machines) -> Iterator[ControlPlane]:
    with open_control_plane(f"sqlite:///{tmp_path / 'control.db'}") as plane:
        register_machines(plane, ("machine-a", "machine-b", "machine-c"),
                          Capacity(pool_free=4 << 30))
        plane.set_lifecycle("machine-c", "draining")
        lease = plane.acquire(deploy_lock_name("shop"), "seed", 60)
        plane.commit("shop", lease.token, [
            PutVolume(volume=Volume(namespace="shop", name="db", owner="machine-a",
                                    dataset="machine-a/shop.db", quota=1 << 30)),
            PutService(service=service_fact("shop", DEPLOYED.services[0])),
        ])
        plane.release(deploy_lock_name("shop"), lease.token)
        yield plane


@pytest.mark.parametrize(
    ("text", "why"),
    [("shop", "no '/'"), ("/db", "namespace ''"), ("shop/", "service ''"),
     ("Shop/db", "namespace 'Shop'"), ("shop/db/x", "service 'db/x'")],
)
def test_malformed_refs_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(MalformedServiceRef) as excinfo:
        parse_service_ref(text)
    assert why in str(excinfo.value) and "NAMESPACE/SERVICE" in str(excinfo.value)


def test_a_ref_names_its_stable_lock_holder() -> None:
    ref = parse_service_ref("shop/db")
    assert ref == ServiceRef("shop", "db") and str(ref) == "shop/db"
    assert ref.holder == "migrate:shop/db"


def test_moved_manifest_moves_the_service_and_its_volume(cp: ControlPlane) -> None:
    service, manifest = moved_manifest(cp, ServiceRef("shop", "db"), "machine-b")
    assert service.machine == "machine-a"
    [move] = make_plan(manifest, cp).moves
    assert (move.name, move.source, move.machine) == ("db", "machine-a", "machine-b")


@pytest.mark.parametrize(
    ("service", "to", "error", "message"),
    [("db", "machine-z", UnknownPlacement, "unknown machine 'machine-z'"),
     ("nope", "machine-b", MigrationRefused, "unknown service shop/nope (services of "
                                             "namespace 'shop': db)"),
     ("db", "machine-a", MigrationRefused, "already runs on 'machine-a'")],
)
def test_refusals_before_any_agent_call(cp: ControlPlane, service: str, to: str,
                                        error: type[Exception], message: str) -> None:
    with pytest.raises(error) as excinfo:
        moved_manifest(cp, ServiceRef("shop", service), to)
    assert message in str(excinfo.value)


def test_a_draining_target_is_refused_by_the_moves_plan(cp: ControlPlane) -> None:
    _, manifest = moved_manifest(cp, ServiceRef("shop", "db"), "machine-c")
    with pytest.raises(MachineDraining) as excinfo:
        make_plan(manifest, cp)
    assert "machine 'machine-c' is draining" in str(excinfo.value)


def test_snapshot_names_follow_the_platform() -> None:
    assert snapshot_name("abc123", "db") == "ployz-move-abc123-db"
    assert snapshot_name("abc123", "db", 2) == "ployz-move-abc123-db-2"


def test_the_record_survives_the_deploy_detail(cp: ControlPlane) -> None:
    record = MigrationRecord(
        deploy_id="abc123-0001", namespace="shop", service="db", source="machine-a",
        target="machine-b", digest="abc123", stopped=["ployz-shop-db-x"],
        volumes=[VolumeRecord(name="db", source_dataset="machine-a/shop.db",
                              target_dataset="machine-b/shop.db",
                              snapshots=["machine-a/shop.db@ployz-move-abc123-db-1"])])
    cp.begin_deploy("shop", "migrate", record.deploy_id, detail=record.detail())
    stored = cp.get_deploy(record.deploy_id).detail
    assert stored["kind"] == "migrate"
    assert MIGRATION.load(stored) == record
    assert record.hold_tag == "ployz-move-abc123-0001"


def test_unfinished_runs_are_the_ones_a_rerun_must_settle(cp: ControlPlane) -> None:
    def record(deploy_id: str, **detail: object) -> None:
        rec = MigrationRecord(deploy_id=deploy_id, namespace="shop", service="db",
                              source="machine-a", target="machine-b", digest="abc123")
        cp.begin_deploy("shop", "migrate", deploy_id, detail={**rec.detail(), **detail})

    record("running")
    record("rolled-back", rolled_back=True)
    cp.update_deploy("rolled-back", status="failed")
    record("left-behind", rolled_back=False)
    cp.update_deploy("left-behind", status="failed")
    record("committed")
    lease = cp.acquire(deploy_lock_name("shop"), "test", 60)
    cp.commit("shop", lease.token, [PutService(service=service_fact("shop",
                                                                   DEPLOYED.services[0]))],
              deploy_id="committed")
    cp.begin_deploy("shop", "deploy", "plain-deploy")  # a plain deploy's run is one too
    assert [d.id for d in unfinished(cp, "shop")] == ["running", "left-behind", "committed",
                                                     "plain-deploy"]
    cp.update_deploy("committed", phase="done")
    cp.update_deploy("plain-deploy", status="failed")
    assert [d.id for d in unfinished(cp, "shop")] == ["running", "left-behind"]
