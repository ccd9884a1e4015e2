"""Runs every ZFS contender on every job (rounds interleaved), checks what arrived, and writes
``$PLOYZ_REPORTS/bench-zfs-peers.json``. Runs inside the ZFS VM, where absolute speeds are
emulation speeds: only ratios within one run mean anything.

Environment: ``PLOYZ_BENCH_ZFS_MIB`` (size of the large snapshots, default 256),
``PLOYZ_BENCH_ZFS_ROUNDS`` (default 1).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.datapath import sshd
from bench.datapath.pipeline import run
from bench.datapath.suite import exit_on_sigterm, free_port
from bench.zfs_peers.contenders import CONTENDERS, SSH_PORT, Contender, Run
from bench.zfs_peers.pools import Job, MiB, destroy, pools, reset_destination

TOOLS = {"syncoid": "syncoid", "bzfs": "bzfs", "autobackup": "zfs-autobackup",
         "zfs_mbuffer": "mbuffer"}


def newest_guid(dataset: str) -> str:
    """The guid of the dataset's newest snapshot: what a replication must reproduce."""
    lines = subprocess.run(["zfs", "list", "-H", "-p", "-o", "guid", "-t", "snapshot", "-s",
                            "createtxg", dataset], capture_output=True, text=True).stdout.split()
    return lines[-1] if lines else "none"


def measure(contender: Contender, job: Job, work: Path) -> dict[str, float]:
    replication = Run(job, contender.target(job), work, free_port())
    contender.before(replication)
    try:
        reset_destination(job, replication.target)
        measured = run(contender.pipeline(replication))
        sent, got = newest_guid(job.dataset), newest_guid(replication.target)
        if sent != got:
            raise RuntimeError(f"{replication.target} ends at guid {got}, the source at {sent}")
        return {"seconds": measured.seconds, "cpu": measured.cpu}
    finally:
        contender.after(replication)
        destroy(replication.target)


def missing(contender: Contender) -> str | None:
    tool = next((t for prefix, t in TOOLS.items() if contender.name.startswith(prefix)), None)
    return f"{tool} is not installed" if tool and not shutil.which(tool) else None


def summarize(samples: list[dict[str, float]], job: Job) -> dict[str, Any]:
    seconds = statistics.median(s["seconds"] for s in samples)
    return {"seconds": round(seconds, 3), "MB_per_s": round(job.bytes / seconds / 1e6, 2),
            "cpu_s": round(statistics.median(s["cpu"] for s in samples), 3),
            "rounds": len(samples)}


def run_all(jobs: list[Job], work: Path, rounds: int,
            checkpoint: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """``checkpoint`` gets the results after every job, so a VM that hits its time limit
    still leaves what it measured."""
    results: dict[str, Any] = {}
    for contender in CONTENDERS:
        results[contender.name] = {"label": contender.label, "role": contender.role, "runs": {}}
        if reason := missing(contender):
            results[contender.name]["error"] = reason
    for job in jobs:
        samples: dict[str, list[dict[str, float]]] = {c.name: [] for c in CONTENDERS}
        errors: dict[str, str] = {}
        for _ in range(rounds):
            for contender in CONTENDERS:
                if "error" in results[contender.name] or contender.name in errors:
                    continue
                if job.name in contender.skip:
                    errors[contender.name] = contender.skip[job.name]
                    continue
                try:
                    samples[contender.name].append(measure(contender, job, work))
                except Exception as exc:  # reported, never dropped
                    errors[contender.name] = f"{type(exc).__name__}: {exc}"[:600]
                print(f"zfs_peers: {job.name} {contender.name}: "
                      f"{errors.get(contender.name) or samples[contender.name][-1]}",
                      file=sys.stderr, flush=True)
        for contender in CONTENDERS:
            runs = results[contender.name]["runs"]
            if contender.name in errors:
                runs[job.name] = {"error": errors[contender.name]}
            elif samples[contender.name]:
                runs[job.name] = summarize(samples[contender.name], job)
        checkpoint(results)
    return results


@contextlib.contextmanager
def writable_ssh_home() -> Iterator[None]:
    """The guest's /root is read-only; ssh wants to write under ~/.ssh."""
    mounted = not os.access("/root/.ssh", os.W_OK)
    if mounted:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/root/.ssh"], check=True)
    try:
        yield
    finally:
        if mounted:
            subprocess.run(["umount", "/root/.ssh"], check=False)


def main() -> None:
    exit_on_sigterm()
    # the PyPI peers (bzfs, zfs-autobackup) live beside this interpreter
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    size = int(os.environ.get("PLOYZ_BENCH_ZFS_MIB", "256")) * MiB
    rounds = int(os.environ.get("PLOYZ_BENCH_ZFS_ROUNDS", "1"))
    work = Path(tempfile.mkdtemp(prefix="ployz-zfs-peers-work-"))
    out = Path(os.environ.get("PLOYZ_REPORTS", ".")) / "bench-zfs-peers.json"
    result: dict[str, Any] = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                    "zfs": subprocess.run(["zfs", "version"], capture_output=True,
                                          text=True).stdout.split()[0]},
        "rounds": rounds, "complete": False}

    def checkpoint(contenders: dict[str, Any]) -> None:
        result["contenders"] = contenders
        out.write_text(json.dumps(result, indent=1) + "\n")

    try:
        with (writable_ssh_home(), sshd.daemon(work / "sshd", "127.0.0.1", SSH_PORT),
              pools(size) as jobs):
            result["datasets"] = {job.name: job.bytes for job in jobs}
            run_all(jobs, work, rounds, checkpoint)
            result["complete"] = True
            checkpoint(result["contenders"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
