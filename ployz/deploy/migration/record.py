"""What a migration writes into its deploy record (``Deploy.detail``) before each mutation.

Every snapshot, hold, stopped container and received dataset is recorded *before* it is made,
so that whoever finds the record after a crash (``migrate apply`` run again) knows everything
the migration may have touched: enough to roll it back before its commit, or to finish its
cleanup after it, from the record alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

KIND = "migrate"


def snapshot_name(digest: str, volume: str, round_: int | None = None) -> str:
    """``ployz-move-<manifest hash>-<volume>`` for the final snapshot (ployz's name), with a
    ``-<n>`` suffix for the pre-copy rounds before it."""
    name = f"ployz-move-{digest}-{volume}"
    return name if round_ is None else f"{name}-{round_}"


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
    evidence: dict[str, Any] | None = None
    """The receiver's acknowledgement of the final send, plus the guids it is checked against."""


class MigrationRecord(BaseModel):
    deploy_id: str
    namespace: str
    service: str
    source: str
    target: str
    digest: str
    keep_source: bool = False
    step: str = "lock"
    stopped: list[str] = Field(default_factory=list)
    """Source containers this migration stopped (restarted by a rollback)."""
    transfers: list[str] = Field(default_factory=list)
    """Transfer ids whose receiver may still run on the target."""
    volumes: list[VolumeRecord] = Field(default_factory=list)
    rolled_back: bool = False
    """Set once a rollback left nothing behind; a rollback that could not finish is retried by
    the next ``migrate apply`` of the namespace."""

    @property
    def hold_tag(self) -> str:
        return f"ployz-move-{self.deploy_id}"

    def detail(self) -> dict[str, Any]:
        return {"kind": KIND, **self.model_dump(mode="json")}

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> MigrationRecord:
        return cls.model_validate({k: v for k, v in detail.items() if k != "kind"})
