"""What a migration writes into its deploy record (``Deploy.detail``) before each mutation.

Every snapshot, hold, stopped container and received dataset is recorded *before* it is made,
so that whoever finds the record after a crash (``migrate apply`` run again) knows everything
the migration may have touched: enough to roll it back before its commit, or to finish its
cleanup after it, from the record alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ployz.agent.api import Committed
from ployz.deploy.run import RunRecord


def snapshot_name(digest: str, volume: str, round_: int | None = None) -> str:
    """``ployz-move-<manifest hash>-<volume>`` for the final snapshot (ployz's name), with a
    ``-<n>`` suffix for the pre-copy rounds before it."""
    name = f"ployz-move-{digest}-{volume}"
    return name if round_ is None else f"{name}-{round_}"


class Evidence(BaseModel):
    """A final send's proof: what the receiver committed (its snapshot, guid, size and stream
    checksum), the guids of the sent snapshot and of its base on the source, and when."""

    committed: Committed
    source_guid: int
    base_guid: int
    acknowledged_at: str


class VolumeRecord(BaseModel):
    name: str
    source_dataset: str
    target_dataset: str
    size: int = 0
    snapshots: list[str] = Field(default_factory=list)
    """Snapshots of the source dataset this migration made (full names), oldest first."""
    held: list[str] = Field(default_factory=list)
    """Those of them that carry this migration's hold."""
    sent: list[str] = Field(default_factory=list)
    """Those of them the target acknowledged, oldest first: the last is the incremental base."""
    evidence: Evidence | None = None
    """The receiver's acknowledgement of the final send, and the guids it was checked
    against."""


class MigrationRecord(RunRecord):
    KIND = "migrate"

    service: str
    source: str
    target: str
    digest: str
    keep_source: bool = False
    stopped: list[str] = Field(default_factory=list)
    """Source containers this migration stopped (restarted by a rollback)."""
    transfers: list[str] = Field(default_factory=list)
    """Transfer ids whose receiver may still run on the target."""
    volumes: list[VolumeRecord] = Field(default_factory=list)
    estimate: dict[str, Any] | None = None
    """What the plan predicted (:class:`~.estimate.Estimate`); ``actual`` the same figures as
    measured, both written once the run ended committed."""
    actual: dict[str, Any] | None = None

    @property
    def hold_tag(self) -> str:
        return f"ployz-move-{self.deploy_id}"
