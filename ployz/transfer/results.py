"""What a finished transfer reports, at either end: the same fields for what both ends saw
(bytes, time, resumes, codec, the receiver's evidence), and each end's own on top."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class TransferResult:
    evidence: dict[str, Any]
    """What the receiver committed: kind, size, stream checksum, and the snapshot and guid (ZFS)
    or the path (file)."""
    bytes: int
    wire_bytes: int
    seconds: float
    resumes: int
    codec: str
    resumed_bytes: int = 0
    encrypted: bool = False
    transfer_id: str = ""

    def summary(self) -> dict[str, Any]:
        """The ``--json`` and agent form."""
        return {"bytes": self.bytes, "wire_bytes": self.wire_bytes,
                "seconds": round(self.seconds, 3), "resumes": self.resumes,
                "codec": self.codec, "committed": self.evidence,
                "resumed_bytes": self.resumed_bytes, "encrypted": self.encrypted,
                "transfer_id": self.transfer_id}


@dataclass(frozen=True, kw_only=True)
class SendResult(TransferResult):
    frames_zstd: int
    frames_raw: int
    frames_spliced: int
    notices: tuple[str, ...] = ()
    receiver_verified: bool = False

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "frames_zstd": self.frames_zstd,
                "frames_raw": self.frames_raw, "frames_spliced": self.frames_spliced,
                "notices": list(self.notices), "receiver_verified": self.receiver_verified}


@dataclass(frozen=True, kw_only=True)
class ReceiveResult(TransferResult):
    refused: int
    """Connections turned away (bad proof, wrong ticket, too many waiting)."""

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "refused": self.refused}
