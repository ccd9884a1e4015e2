"""Manifests derived from committed facts, and the move of one service (what migrate renders)."""

from __future__ import annotations

import textwrap
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
from ployz.deploy.current import current_manifest, move_service
from ployz.deploy.errors import MoveRefused, NothingDeployed
from ployz.deploy.manifest import parse_manifest, render
from ployz.deploy.plan import make_plan
from ployz.deploy.specs import service_fact

DEPLOYED = parse_manifest(textwrap.dedent("""
    namespace = "shop"
    [[volumes]]
    name = "db"
    quota = "1G"
    owner = "machine-a"
    [[volumes]]
    name = "media"
    scope = "shared"
    owner = "machine-a"
    [[services]]
    name = "db"
    placement = "machine-a"
    [services.template]
    image = "img:1"
    command = ["sleep", "600"]
    mounts = { db = "/data" }
    [[services]]
    name = "web"
    placement = "machine-a"
    [services.template]
    image = "img:1"
    mounts = { media = "/www" }
    [[services]]
    name = "thumbs"
    placement = "machine-a"
    [services.template]
    image = "img:1"
    mounts = { media = "/media" }
"""), "deploy.toml")


@pytest.fixture
def cp(tmp_path: Path, register_machines) -> Iterator[ControlPlane]:
    with open_control_plane(f"sqlite:///{tmp_path / 'control.db'}") as plane:
        register_machines(plane, ("machine-a", "machine-b"), Capacity(pool_free=4 << 30))
        lease = plane.acquire(deploy_lock_name("shop"), "seed", 60)
        plane.commit("shop", lease.token, [
            *(PutVolume(volume=Volume(namespace="shop", name=v.name, owner=v.owner,
                                      dataset=f"machine-a/shop.{v.name}", quota=v.quota))
              for v in DEPLOYED.volumes),
            *(PutService(service=service_fact("shop", s)) for s in DEPLOYED.services),
        ])
        yield plane


def test_current_manifest_plans_no_change(cp: ControlPlane):
    current = current_manifest(cp, "shop")
    assert current.model_dump() == DEPLOYED.model_copy(
        update={"services": sorted(DEPLOYED.services, key=lambda s: s.name)}).model_dump()
    assert not make_plan(current, cp).changes_anything


def test_namespace_without_services_has_no_manifest(cp: ControlPlane):
    with pytest.raises(NothingDeployed):
        current_manifest(cp, "other")


def test_moved_service_renders_a_move_that_plans_as_a_move(cp: ControlPlane):
    moved = move_service(current_manifest(cp, "shop"), "db", "machine-b")
    text = render(moved)
    assert '[intent.volumes.db.move]\nfrom_machine = "machine-a"\nto_machine = "machine-b"' in text
    plan = make_plan(parse_manifest(text, "rendered"), cp)
    [move] = plan.moves
    assert (move.name, move.source, move.machine) == ("db", "machine-a", "machine-b")
    assert [(a.name, a.kind) for a in plan.services] == [
        ("db", "replace"), ("thumbs", "keep"), ("web", "keep")]


@pytest.mark.parametrize(
    ("service", "to", "message"),
    [("nope", "machine-b", "unknown service shop/nope"),
     ("db", "machine-a", "already runs on 'machine-a'"),
     ("web", "machine-b", "shares volumes with thumbs")],
)
def test_impossible_moves_are_refused(cp: ControlPlane, service: str, to: str, message: str):
    with pytest.raises(MoveRefused) as excinfo:
        move_service(current_manifest(cp, "shop"), service, to)
    assert message in str(excinfo.value)
