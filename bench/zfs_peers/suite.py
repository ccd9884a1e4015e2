"""Runs every ZFS contender on every job (rounds interleaved, each starting one contender
later), checks what arrived, and writes ``$PLOYZ_REPORTS/bench-zfs-peers.json``. Runs inside
the ZFS VM, where absolute speeds are emulation speeds: only ratios within one run mean
anything.

Environment: ``PLOYZ_BENCH_ZFS_MIB`` (size of the large snapshots, default 256),
``PLOYZ_BENCH_ZFS_ROUNDS`` (default 1), ``PLOYZ_BENCH_ZFS_CONTENDERS`` and
``PLOYZ_BENCH_ZFS_JOBS`` (comma-separated names, default all: a profiling session measures a
few contenders on one snapshot without paying for the rest).

Our engine's CPU excludes its interpreters' start-up, as in the host data-path suite, and each
of its rounds records the sender's summary (codec, frames compressed and raw, wire bytes).
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
from bench.datapath.contenders import engine_startup_cpu, last_json
from bench.datapath.pipeline import run
from bench.datapath.suite import env_list, exit_on_sigterm, free_port
from bench.rounds import rotated
from bench.zfs_peers.contenders import CONTENDERS, SSH_PORT, Contender, Run
from bench.zfs_peers.pools import Job, MiB, destroy, pools, reset_destination

TOOLS = {"syncoid": "syncoid", "bzfs": "bzfs", "autobackup": "zfs-autobackup",
         "zfs_mbuffer": "mbuffer"}


def newest_guid(dataset: str) -> str:
    """The guid of the dataset's newest snapshot: what a replication must reproduce."""
    lines = subprocess.run(["zfs", "list", "-H", "-p", "-o", "guid", "-t", "snapshot", "-s",
                            "createtxg", dataset], capture_output=True, text=True).stdout.split()
    return lines[-1] if lines else "none"


ENGINE_SUMMARY = ("codec", "frames_zstd", "frames_raw", "frames_spliced", "bytes", "wire_bytes",
                  "seconds")


def measure(contender: Contender, job: Job, work: Path) -> dict[str, Any]:
    replication = Run(job, contender.target(job), work, free_port())
    contender.before(replication)
    try:
        reset_destination(job, replication.target)
        measured = run(contender.pipeline(replication))
        sent, got = newest_guid(job.dataset), newest_guid(replication.target)
        if sent != got:
            raise RuntimeError(f"{replication.target} ends at guid {got}, the source at {sent}")
        if not contender.engine:
            return {"seconds": measured.seconds, "cpu": measured.cpu}
        summary = last_json(measured.send_out)
        return {"seconds": measured.seconds, "cpu": measured.cpu - engine_startup_cpu(measured),
                "engine": {key: summary[key] for key in ENGINE_SUMMARY}}
    finally:
        contender.after(replication)
        destroy(replication.target)


def missing(contender: Contender) -> str | None:
    tool = next((t for prefix, t in TOOLS.items() if contender.name.startswith(prefix)), None)
    return f"{tool} is not installed" if tool and not shutil.which(tool) else None


def summarize(samples: list[dict[str, Any]], job: Job) -> dict[str, Any]:
    seconds = statistics.median(s["seconds"] for s in samples)
    engine = [s["engine"] for s in samples if "engine" in s]
    return {"seconds": round(seconds, 3), "MB_per_s": round(job.bytes / seconds / 1e6, 2),
            "cpu_s": round(statistics.median(s["cpu"] for s in samples), 3),
            "rounds": len(samples), **({"engine": engine} if engine else {})}


def warm_up(jobs: list[Job], contenders: list[Contender], work: Path) -> None:
    """One untimed replication of the smallest snapshot per contender. A fresh VM reads each
    tool's programs and libraries (interpreters and their packages, for most of them) from the
    shared root the first time, a cost that would otherwise fall on whichever contender the
    suite happens to measure first."""
    smallest = min(jobs, key=lambda job: job.bytes)
    for contender in contenders:
        if missing(contender) or smallest.name in contender.skip:
            continue
        with contextlib.suppress(Exception):  # a contender that fails shows in the real runs
            measure(contender, smallest, work)


def run_all(jobs: list[Job], contenders: list[Contender], work: Path, rounds: int,
            checkpoint: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """``checkpoint`` gets the results after every job, so a VM that hits its time limit
    still leaves what it measured."""
    results: dict[str, Any] = {}
    for contender in contenders:
        results[contender.name] = {"label": contender.label, "role": contender.role, "runs": {}}
        if reason := missing(contender):
            results[contender.name]["error"] = reason
    for job in jobs:
        samples: dict[str, list[dict[str, Any]]] = {c.name: [] for c in contenders}
        errors: dict[str, str] = {}
        for round_index in range(rounds):
            for contender in rotated(tuple(contenders), round_index):
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
        for contender in contenders:
            runs = results[contender.name]["runs"]
            if contender.name in errors:
                runs[job.name] = {"error": errors[contender.name]}
            elif samples[contender.name]:
                runs[job.name] = summarize(samples[contender.name], job)
        checkpoint(results)
    return results


@contextlib.contextmanager
def guest_ssh() -> Iterator[None]:
    """Makes ssh to the guest itself work as on a booted machine. The guest's /root is
    read-only, and ssh wants to write under an existing ~/.ssh (without one it only warns that
    it cannot create it). The guest never finishes booting in systemd's terms, so
    /run/nologin stays, and PAM prints its "System is booting up" on every session, to stderr,
    where syncoid takes it for the answer of a remote command."""
    Path("/run/nologin").unlink(missing_ok=True)
    mounted = os.path.isdir("/root/.ssh") and not os.access("/root/.ssh", os.W_OK)
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
    chosen = env_list("PLOYZ_BENCH_ZFS_CONTENDERS", tuple(c.name for c in CONTENDERS))
    contenders = [c for c in CONTENDERS if c.name in chosen]
    job_names = env_list("PLOYZ_BENCH_ZFS_JOBS", ())
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
        with (guest_ssh(), sshd.daemon(work / "sshd", "127.0.0.1", SSH_PORT),
              pools(size) as jobs):
            jobs = [job for job in jobs if not job_names or job.name in job_names]
            result["datasets"] = {job.name: job.bytes for job in jobs}
            warm_up(jobs, contenders, work)
            run_all(jobs, contenders, work, rounds, checkpoint)
            result["complete"] = True
            checkpoint(result["contenders"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
