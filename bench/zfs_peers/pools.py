"""The source and destination pools of the ZFS suite, on sparse files, and the snapshots every
contender replicates: incompressible and compressible data, an incremental with a small delta,
and a tiny dataset whose replication time is the tool's fixed cost."""

from __future__ import annotations

import contextlib
import random
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.transfer.bench_loopback import BLOCK, text_blocks

MiB = 1 << 20
SRC, DST = "pzbsrc", "pzbdst"


def sh(command: str) -> str:
    """Runs a shell pipeline; a failure says what the commands printed on stderr."""
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command}: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Job:
    """One replication: the snapshot to send, its incremental base (``@a``) if any, and the
    stream's size in bytes."""

    name: str
    dataset: str  # the source dataset
    snapshot: str  # full name, POOL/DS@SNAP
    base: str | None
    bytes: int


def write(path: Path, size: int, text: bool, seed: str) -> None:
    rng = random.Random(seed)
    texts = text_blocks(rng) if text else []
    with open(path, "wb") as out:
        for index in range(max(size // BLOCK, 1)):
            out.write(texts[index % len(texts)] if texts else rng.randbytes(min(size, BLOCK)))


def stream_bytes(snapshot: str, base: str | None) -> int:
    incremental = f"-i {base} " if base else ""
    return int(sh(f"zfs send -nvP {incremental}{snapshot} | awk '/^size/ {{print $2}}'"))


@contextlib.contextmanager
def pools(size: int) -> Iterator[list[Job]]:
    """Both pools with compression off (the stream carries the data as written, so
    compressibility is the codec's business), torn down on exit."""
    images = Path(tempfile.mkdtemp(prefix="ployz-zfs-peers-"))
    try:
        for pool, room in ((SRC, 3 * size + 256 * MiB), (DST, 2 * size + 256 * MiB)):
            sh(f"truncate -s {room // MiB}M {images / pool}.img")
            sh(f"zpool create -f -O compression=off -m /run/{pool} {pool} {images / pool}.img")
        sh(f"zfs create {DST}/ab")  # zfs-autobackup's target parent
        jobs = []
        for name, data, text in (("incompressible", size, False), ("compressible", size, True),
                                 ("incremental", size // 4, False), ("tiny", MiB, False)):
            dataset = f"{SRC}/{name}"
            sh(f"zfs create {dataset}")
            write(Path(f"/run/{dataset}/data"), data, text, name)
            sh(f"sync && zfs snapshot {dataset}@a")
            base = None
            if name == "incremental":  # a small delta on top: 1/16 of the data rewritten
                write(Path(f"/run/{dataset}/delta"), max(size // 64, MiB), False, "delta")
                sh(f"sync && zfs snapshot {dataset}@b")
                base = "@a"
            snapshot = f"{dataset}@{'b' if base else 'a'}"
            jobs.append(Job(name, dataset, snapshot, base,
                            stream_bytes(snapshot, f"{dataset}{base}" if base else None)))
        yield jobs
    finally:
        for pool in (SRC, DST):
            subprocess.run(["zpool", "destroy", "-f", pool], capture_output=True)
        for image in images.glob("*.img"):
            image.unlink()
        images.rmdir()


def release_holds(snapshot: str) -> None:
    """zfs-autobackup holds the snapshots it makes, on both sides; a held snapshot cannot be
    destroyed."""
    holds = subprocess.run(["zfs", "holds", "-H", snapshot], capture_output=True,
                           text=True).stdout.splitlines()
    for tag in {line.split("\t")[1] for line in holds if line}:
        subprocess.run(["zfs", "release", tag, snapshot], check=True)


def destroy(dataset: str) -> None:
    """Destroys ``dataset`` and its snapshots, held or not; a missing dataset is fine."""
    snapshots = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r",
                                dataset], capture_output=True, text=True).stdout.split()
    for snapshot in snapshots:
        release_holds(snapshot)
    subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True)


def reset_destination(job: Job, target: str) -> None:
    """Destroys ``target`` and, for an incremental job, seeds it with the base snapshot
    (untimed), so every contender starts from the same state."""
    destroy(target)
    if job.base:
        sh(f"zfs send {job.dataset}{job.base} | zfs receive -u {target}")
