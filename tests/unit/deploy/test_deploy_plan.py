"""Deploy plans against a real SQLite control plane seeded through its API."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.control import (
    Capacity,
    ControlPlane,
    Machine,
    PutService,
    PutVolume,
    Volume,
    deploy_lock_name,
    open_control_plane,
)
from ployz.deploy.errors import (
    GatewayHostClaimed,
    InsufficientCapacity,
    MachineDraining,
    MachineSilent,
    MoveSourceMismatch,
    NotADnsLabel,
    QuotaChangeUnsupported,
    UnknownPlacement,
    VolumeOwnerConflict,
)
from ployz.deploy.manifest import Manifest, parse_manifest
from ployz.deploy.plan import make_plan
from ployz.deploy.specs import service_fact

GIB = 1 << 30

MANIFEST = textwrap.dedent("""
    namespace = "shop"
    [[volumes]]
    name = "db"
    quota = "1G"
    owner = "{owner}"
    [[services]]
    name = "db"
    placement = "{owner}"
    [services.template]
    image = "img:1"
    mounts = {{ db = "/data" }}
""")


def manifest(owner: str = "machine-a", extra: str = "", **replace: str) -> Manifest:
    text = MANIFEST.format(owner=owner) + textwrap.dedent(extra)
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_manifest(text, "deploy.toml")


@pytest.fixture
def cp(tmp_path: Path, register_machines) -> Iterator[ControlPlane]:
    with open_control_plane(f"sqlite:///{tmp_path / 'control.db'}") as plane:
        register_machines(plane, ("machine-a", "machine-b", "machine-c"),
                          Capacity(pool_size=4 * GIB, pool_free=3 * GIB, pool_used=GIB))
        yield plane


def seed(cp: ControlPlane, deployed: Manifest, dataset: str = "machine-a/shop.db") -> None:
    """Record ``deployed`` as committed, as a finished deploy would have."""
    lease = cp.acquire(deploy_lock_name(deployed.namespace), "seed", 60)
    changes = [PutVolume(volume=Volume(namespace=deployed.namespace, name=v.name,
                                       dataset=dataset, owner=v.owner, quota=v.quota, size=GIB))
               for v in deployed.volumes]
    changes += [PutService(service=service_fact(deployed.namespace, s)) for s in deployed.services]
    cp.commit(deployed.namespace, lease.token, changes)
    cp.release(deploy_lock_name(deployed.namespace), lease.token)


def test_first_deploy_creates_volume_and_starts_service(cp: ControlPlane):
    plan = make_plan(manifest(), cp)
    assert [(a.kind, a.name, a.machine, a.quota) for a in plan.volumes] == [
        ("create", "db", "machine-a", GIB)
    ]
    assert [(a.kind, a.name, a.machine, a.image) for a in plan.services] == [
        ("start", "db", "machine-a", "img:1")
    ]
    assert [(c.machine, c.pool_free, c.needed) for c in plan.capacity] == [
        ("machine-a", 3 * GIB, GIB)
    ]
    assert plan.changes_anything and not plan.moves


def test_deployed_manifest_plans_no_change(cp: ControlPlane):
    seed(cp, manifest())
    plan = make_plan(manifest(), cp)
    assert [a.kind for a in (*plan.volumes, *plan.services)] == ["keep", "keep"]
    assert plan.volumes[0].dataset == "machine-a/shop.db"
    assert not plan.changes_anything and plan.capacity == ()


def test_changed_service_is_replaced_and_dropped_one_removed(cp: ControlPlane):
    seed(cp, manifest(extra="""
        [[services]]
        name = "old"
        placement = "machine-b"
        [services.template]
        image = "img:1"
    """))
    plan = make_plan(manifest(**{"img:1": "img:2"}), cp)
    db = plan.service("db")
    assert (db.kind, db.changes, db.previous_machine) == ("replace", ("image",), "machine-a")
    old = plan.service("old")
    assert (old.kind, old.machine, old.previous_machine) == ("remove", None, "machine-b")


def test_move_intent_plans_a_move_and_its_rerun_keeps(cp: ControlPlane):
    seed(cp, manifest())
    move = """
        [intent.volumes.db.move]
        from_machine = "machine-a"
        to_machine = "machine-b"
    """
    plan = make_plan(manifest("machine-b", move), cp)
    [action] = plan.moves
    assert (action.source, action.machine, action.dataset) == (
        "machine-a", "machine-b", "machine-a/shop.db")
    assert plan.service("db").changes == ("placement",)
    assert [(c.machine, c.needed) for c in plan.capacity] == [("machine-b", GIB)]

    seed(cp, manifest("machine-b"), dataset="machine-b/shop.db")
    rerun = make_plan(manifest("machine-b", move), cp)
    assert [a.kind for a in (*rerun.volumes, *rerun.services)] == ["keep", "keep"]


def test_volumes_missing_from_the_manifest_are_retained(cp: ControlPlane):
    seed(cp, manifest(extra="""
        [[volumes]]
        name = "logs"
        owner = "machine-a"
    """))
    assert make_plan(manifest(), cp).retained_volumes == ("logs",)


def test_unknown_machine_names_the_field_and_the_known_machines(cp: ControlPlane):
    with pytest.raises(UnknownPlacement) as excinfo:
        make_plan(manifest("machine-z"), cp)
    assert excinfo.value.path == "volumes[0].owner"
    assert "unknown machine 'machine-z' (known machines: machine-a, machine-b, machine-c)" in str(
        excinfo.value)


def test_unknown_move_source_is_refused(cp: ControlPlane):
    seed(cp, manifest())
    with pytest.raises(UnknownPlacement) as excinfo:
        make_plan(manifest("machine-b", """
            [intent.volumes.db.move]
            from_machine = "machine-q"
            to_machine = "machine-b"
        """), cp)
    assert excinfo.value.path == "intent.volumes.db.move.from_machine"


def test_draining_machine_takes_no_new_placement(cp: ControlPlane):
    cp.set_lifecycle("machine-a", "draining")
    with pytest.raises(MachineDraining) as excinfo:
        make_plan(manifest(), cp)
    assert excinfo.value.path == "volumes[0].owner"


def test_service_already_on_a_draining_machine_may_be_updated(cp: ControlPlane):
    seed(cp, manifest())
    cp.set_lifecycle("machine-a", "draining")
    assert make_plan(manifest(**{"img:1": "img:2"}), cp).service("db").kind == "replace"


def test_machine_without_heartbeat_is_refused(cp: ControlPlane):
    cp.register_machine(Machine(id="machine-new", overlay_ip="10.210.0.9", subnet="10.210.9.0/24"))
    with pytest.raises(MachineSilent) as excinfo:
        make_plan(manifest("machine-new"), cp)
    assert "never sent a heartbeat" in str(excinfo.value)


def test_quota_beyond_last_reported_free_space_is_refused(cp: ControlPlane):
    with pytest.raises(InsufficientCapacity) as excinfo:
        make_plan(manifest(**{'quota = "1G"': 'quota = "4G"'}), cp)
    assert (excinfo.value.machine, excinfo.value.needed, excinfo.value.free) == (
        "machine-a", 4 * GIB, 3 * GIB)


def test_quotas_of_several_new_volumes_add_up(cp: ControlPlane):
    two = manifest(**{'quota = "1G"': 'quota = "2G"'}, extra="""
        [[volumes]]
        name = "logs"
        quota = "2G"
        owner = "machine-a"
    """)
    with pytest.raises(InsufficientCapacity) as excinfo:
        make_plan(two, cp)
    assert excinfo.value.needed == 4 * GIB and "db, logs" in str(excinfo.value)


def test_volume_on_another_machine_without_move_intent_is_refused(cp: ControlPlane):
    seed(cp, manifest())
    with pytest.raises(VolumeOwnerConflict) as excinfo:
        make_plan(manifest("machine-b"), cp)
    assert excinfo.value.path == "volumes[0].owner"
    assert "owned by 'machine-a'" in str(excinfo.value) and "intent.volumes.db.move" in str(
        excinfo.value)


def test_move_from_a_machine_that_does_not_own_the_volume_is_refused(cp: ControlPlane):
    seed(cp, manifest())
    with pytest.raises(MoveSourceMismatch) as excinfo:
        make_plan(manifest("machine-b", """
            [intent.volumes.db.move]
            from_machine = "machine-c"
            to_machine = "machine-b"
        """), cp)
    assert "owned by 'machine-a'" in str(excinfo.value)


def test_move_of_a_volume_that_does_not_exist_is_refused(cp: ControlPlane):
    with pytest.raises(MoveSourceMismatch) as excinfo:
        make_plan(manifest("machine-b", """
            [intent.volumes.db.move]
            from_machine = "machine-a"
            to_machine = "machine-b"
        """), cp)
    assert "not created yet" in str(excinfo.value)


def test_quota_change_of_an_existing_volume_is_refused(cp: ControlPlane):
    seed(cp, manifest())
    with pytest.raises(QuotaChangeUnsupported) as excinfo:
        make_plan(manifest(**{'quota = "1G"': 'quota = "2G"'}), cp)
    assert excinfo.value.path == "volumes[0].quota"


WEB = textwrap.dedent("""
    namespace = "{namespace}"
    [[services]]
    name = "{name}"
    placement = "machine-a"
    [services.template]
    image = "img:1"
    ports = [8080]
    [services.http]
    host = "{host}"
    port = 8080
""")


def web(namespace: str = "site", name: str = "web", host: str = "www.example") -> Manifest:
    return parse_manifest(WEB.format(namespace=namespace, name=name, host=host), "web.toml")


@pytest.mark.parametrize(("namespace", "name", "path"), [
    ("site-", "web", "namespace"), ("site", "web-", "services[0].name")])
def test_a_name_dns_cannot_answer_is_refused_by_the_plan(cp: ControlPlane, namespace: str,
                                                         name: str, path: str):
    with pytest.raises(NotADnsLabel) as refused:
        make_plan(web(namespace, name), cp)
    assert refused.value.path == path
    assert "<service>.<namespace>.ployz.internal" in str(refused.value)


def test_a_gateway_host_of_another_namespace_is_refused(cp: ControlPlane):
    seed(cp, web("site", host="www.example"))
    assert make_plan(web("site", host="www.example"), cp).changes_anything is False
    with pytest.raises(GatewayHostClaimed) as refused:
        make_plan(web("other", host="WWW.example"), cp)
    assert refused.value.holder == "site/web" and refused.value.path == "services[0].http.host"
    assert make_plan(web("other", host="two.example"), cp).changes_anything


def test_a_changed_gateway_host_replaces_the_service(cp: ControlPlane):
    seed(cp, web(host="www.example"))
    (action,) = make_plan(web(host="new.example"), cp).services
    assert (action.kind, action.changes) == ("replace", ("http",))
