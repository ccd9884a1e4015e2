"""``migrate preview --out PLAN`` then ``migrate apply --plan PLAN``: the saved plan is executed
when its facts still hold, and refused, before anything changes, naming each one that does
not; a file that is not a plan is refused with why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ployz.control import ControlPlane
from ployz.deploy.migration.apply import migrate
from ployz.deploy.migration.plan import plan_migration
from ployz.deploy.migration.saved_plan import (
    PlanFileError,
    PlanOutdated,
    load_plan,
    write_plan,
)
from tests.unit.deploy.fake_agents import FakeCluster
from tests.unit.migration.conftest import MACHINES, WEB
from tests.unit.migration.test_migration_run import on_source


@pytest.fixture
def machines() -> list[str]:
    return [*MACHINES, "machine-c"]


@pytest.fixture
def saved(cp: ControlPlane, agents: FakeCluster, tmp_path: Path) -> str:
    path = tmp_path / "move.json"
    write_plan(plan_migration(cp, agents, WEB, "machine-b"), path)
    assert path.stat().st_mode & 0o777 == 0o600
    return str(path)


def test_a_plan_that_still_holds_is_executed(cp: ControlPlane, agents: FakeCluster,
                                             saved: str) -> None:
    result = migrate(cp, agents, WEB, "machine-b", expected=load_plan(saved))
    assert result.target == "machine-b"


def test_a_plan_made_before_the_service_moved_is_refused_naming_what_changed(
        cp: ControlPlane, agents: FakeCluster, saved: str) -> None:
    migrate(cp, agents, WEB, "machine-c")
    before = cp.namespace("shop")
    with pytest.raises(PlanOutdated) as refused:
        migrate(cp, agents, WEB, "machine-b", expected=load_plan(saved))
    message = str(refused.value)
    assert "shop/web runs on machine-c now; the plan moves it from machine-a" in message
    assert cp.namespace("shop") == before
    # Moved to where the plan moves it, it is refused for the same reason (not as a move to
    # where it already runs).
    with pytest.raises(PlanOutdated, match="runs on machine-c now"):
        migrate(cp, agents, WEB, "machine-c", expected=load_plan(saved))


def test_another_dataset_a_grown_volume_and_another_target_are_each_named(
        cp: ControlPlane, agents: FakeCluster, saved: str) -> None:
    source = agents.machines["machine-a"].datasets["machine-a/shop.db"]
    source.props["guid"] = 424242
    source.props["referenced"] = 10 << 30
    with pytest.raises(PlanOutdated) as refused:
        migrate(cp, agents, WEB, "machine-c", expected=load_plan(saved))
    message = str(refused.value)
    assert "the plan moves it to machine-b, not machine-c" in message
    assert "is another one now (guid 424242" in message
    assert "grew from" in message and "beyond the plan's 10% margin" in message
    on_source(cp, agents)


@pytest.mark.parametrize(("text", "reason"), [
    ("{", "file: Invalid JSON"),
    ('{"format": "ployz-migration-plan-9"}', "service: Field required"),
])
def test_a_file_that_is_not_a_plan_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(PlanFileError, match=reason):
        load_plan(str(path))
    with pytest.raises(PlanFileError, match="cannot read it"):
        load_plan(str(tmp_path / "missing.json"))


def test_a_plan_of_another_format_is_refused(saved: str) -> None:
    data = json.loads(Path(saved).read_text())
    data["format"] = "ployz-migration-plan-0"
    Path(saved).write_text(json.dumps(data))
    with pytest.raises(PlanFileError, match="format 'ployz-migration-plan-0'"):
        load_plan(saved)
