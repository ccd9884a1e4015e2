"""A migration plan kept in a file: ``migrate preview --out PLAN`` writes it, ``migrate apply
--plan PLAN`` executes exactly it.

The file is the preview's JSON (``migrate preview --json``) with a format tag. What apply holds
it to are the facts it was made from: where the service runs and is moved to, the manifest it
moves (its digest: the service's definition), each volume's dataset, guid (another dataset of
the same name is other data) and size, and the room on the target. Apply plans again under the
namespace's lock and refuses, before it changes anything, when any of them no longer holds,
naming each; a volume may have grown by the plan's room margin (what pre-copy allows for).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ployz.deploy.errors import DeployError
from ployz.deploy.migration.plan import ROOM_MARGIN, MigrationPlan
from ployz.private_files import write_private

FORMAT = "ployz-migration-plan-1"


class PlanFileError(DeployError):
    """The plan file cannot be read or is not a migration plan."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: not a migration plan this version can execute: {reason}")


class PlanOutdated(DeployError):
    """The facts a plan was made from no longer hold; ``changes`` names each."""

    def __init__(self, path: str, changes: list[str]) -> None:
        self.changes = changes
        lines = "\n".join(f"  {change}" for change in changes)
        super().__init__(f"{path}: the plan no longer holds, nothing was changed:\n{lines}\n"
                         "  make a new one (`ployzctl migrate preview ... --out PLAN`)")


class _Saved(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SavedVolume(_Saved):
    name: str
    source_dataset: str
    target_dataset: str
    size: int
    guid: int


class SavedRoom(_Saved):
    pool: str
    needed: int


class SavedPlan(_Saved):
    format: str
    service: str
    source: str
    target: str
    manifest_digest: str
    volumes: list[SavedVolume]
    target_pool: SavedRoom


def write_plan(plan: MigrationPlan, path: Path) -> None:
    write_private(path, json.dumps({"format": FORMAT, **plan.to_json()}, indent=1) + "\n")


@dataclass(frozen=True)
class PlanFile:
    """A plan read from ``path``, which an apply must still find true."""

    path: str
    saved: SavedPlan

    def check(self, current: MigrationPlan) -> None:
        """PlanOutdated, naming every change, unless ``current`` is still the saved plan."""
        changes = changes_since(self.saved, current)
        if changes:
            raise PlanOutdated(self.path, changes)

    def check_placement(self, placed_on: str) -> None:
        """PlanOutdated when the service no longer runs where the plan moves it from: checked
        before planning anew, which would refuse a move to where it runs now for that reason
        alone."""
        if placed_on != self.saved.source:
            raise PlanOutdated(self.path, [
                f"{self.saved.service} runs on {placed_on} now; the plan moves it from "
                f"{self.saved.source}"])


def load_plan(path: str) -> PlanFile:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(path, f"cannot read it ({exc})") from None
    try:
        saved = SavedPlan.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise PlanFileError(path, problems) from None
    if saved.format != FORMAT:
        raise PlanFileError(path, f"format {saved.format!r}, expected {FORMAT!r}")
    return PlanFile(path, saved)


def changes_since(saved: SavedPlan, current: MigrationPlan) -> list[str]:
    """What no longer holds of ``saved`` in ``current`` (the same move planned now)."""
    changes = []
    if saved.service != str(current.ref):
        changes.append(f"the plan moves {saved.service}, not {current.ref}")
    if saved.target != current.target:
        changes.append(f"the plan moves it to {saved.target}, not {current.target}")
    if saved.source != current.source:
        changes.append(f"{current.ref} runs on {current.source} now; the plan moves it from "
                       f"{saved.source}")
    if saved.manifest_digest != current.digest:
        changes.append(f"the service's definition changed (manifest {current.digest}, the "
                       f"plan's {saved.manifest_digest})")
    now = {v.name: v for v in current.volumes}
    for volume in saved.volumes:
        found = now.get(volume.name)
        if found is None:
            changes.append(f"volume {volume.name} no longer moves with it (owned elsewhere, or "
                           "gone)")
            continue
        if found.source_dataset != volume.source_dataset:
            changes.append(f"volume {volume.name} is {found.source_dataset} now, not "
                           f"{volume.source_dataset}")
        elif found.guid != volume.guid:
            changes.append(f"volume {volume.name}'s dataset {found.source_dataset} is another "
                           f"one now (guid {found.guid}, the plan's {volume.guid})")
        if found.size > volume.size * (1 + ROOM_MARGIN):
            changes.append(f"volume {volume.name} grew from {volume.size} to {found.size} "
                           f"bytes, beyond the plan's {ROOM_MARGIN:.0%} margin")
    for name in sorted(set(now) - {v.name for v in saved.volumes}):
        changes.append(f"volume {name} moves with it now, which the plan did not include")
    room = current.room
    if not room.has_room:
        changes.append(f"the target pool {room.pool} on {room.machine} has {room.free} bytes "
                       f"free, less than the {room.needed} the move needs")
    return changes
