"""What a dataset's users wrote, from the kernel statistics ZFS keeps for each mounted dataset.

``/proc/spl/kstat/zfs/<pool>/objset-0x<id>`` names its dataset (``dataset_name``) and counts the
bytes written to it through the filesystem (``nwritten``) as they are written. It is the only
measure of a service's write rate that sees overwrites before a snapshot exists (``written``
then is the dataset's whole size, which rewriting a file does not grow) and that does not wait
for a transaction group to commit.
"""

from __future__ import annotations

import errno
from pathlib import Path

from ployz.zfs.errors import ZFSError

KSTAT_ROOT = Path("/proc/spl/kstat/zfs")


def bytes_written(dataset: str, root: Path = KSTAT_ROOT) -> int | None:
    """Bytes written to ``dataset`` since ZFS began counting (its mount); None when ZFS keeps
    no statistics for it (not mounted, or a ZFS older than 0.8)."""
    for path in (root / dataset.split("/")[0]).glob("objset-0x*"):
        try:
            fields = parse(path.read_text())
        except OSError:  # the dataset was unmounted between the listing and the read
            continue
        if fields.get("dataset_name") == dataset:
            try:
                return int(fields["nwritten"])
            except (KeyError, ValueError) as exc:
                raise ZFSError(errno.EIO, dataset,
                               f"unreadable kernel statistics in {path}: {exc}") from exc
    return None


def parse(text: str) -> dict[str, str]:
    """The ``name type data`` rows of a named kstat (after its two header lines)."""
    rows: dict[str, str] = {}
    for line in text.splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) == 3:
            rows[parts[0]] = parts[2].strip()
    return rows
