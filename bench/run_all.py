"""``make bench``: the whole benchmark suite in one run, then its report.

1. micro-benchmarks of the hot path (pytest-benchmark), on the host;
2. the host data path (``bench.datapath``): engine vs nc, socat, mbuffer, zstd|nc, ssh and
   iperf3, over loopback and wireguard-go;
3. the engine in one process over loopback (``bench.transfer.bench_loopback``): the
   authenticated stream vs mbuffer, the encrypted stream vs ssh, the codecs vs zstd | nc;
4. real ZFS against its peers (``bench.zfs_peers``), in one boot of the ZFS VM;
5. the cutover window of ``migrate apply`` against a stop-first migration
   (``bench.migration``), in another boot, in the sandbox cluster, with the downtime a client
   on a third machine saw;
6. the HTTP gateway (HAProxy, as ``machine init`` configures it) against a direct connection
   (``bench.gateway``), on the host.

Writes ``bench/results/results.json`` (every figure and the machine), ``results.md``, the PNG
charts and the README's performance section. ``PLOYZ_BENCH_SUITES`` picks suites (default
micro,datapath,loopback,zfs,migration,gateway); sizes are set by each suite's variables (see their
docstrings). A suite that fails is recorded with its error and the others still run. With
``PLOYZ_BENCH_MERGE=1`` the chosen suites replace theirs in the existing results.json and the
others are kept, each with the date it was measured (the report names the later ones).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report
from bench.datapath.suite import exit_on_sigterm, run_suite

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
ZFS_VARS = ("PLOYZ_BENCH_ZFS_MIB", "PLOYZ_BENCH_ZFS_ROUNDS", "PLOYZ_BENCH_ZFS_CONTENDERS",
            "PLOYZ_BENCH_ZFS_JOBS")
MIGRATION_VARS = ("PLOYZ_BENCH_MIGRATION_MIB", "PLOYZ_BENCH_MIGRATION_PARTS",
                  "PLOYZ_BENCH_MIGRATION_PART_MIB", "PLOYZ_BENCH_DRAIN_ROUNDS")
GATEWAY_VARS = ("PLOYZ_BENCH_GATEWAY_MIB", "PLOYZ_BENCH_GATEWAY_ROUNDS")
LOOPBACK_VARS = ("PLOYZ_BENCH_MIB", "PLOYZ_BENCH_LIMITED_MIB", "PLOYZ_BENCH_ROUNDS")
SIZE_VARS = ("PLOYZ_BENCH_DATAPATH_MIB", "PLOYZ_BENCH_DATAPATH_ROUNDS",
             "PLOYZ_BENCH_DATAPATH_KINDS", "PLOYZ_BENCH_DATAPATH_LINKS", *LOOPBACK_VARS,
             *ZFS_VARS, *MIGRATION_VARS, *GATEWAY_VARS, "PLOYZ_BENCH_SUITES",
             "PLOYZ_BENCH_VM_TIMEOUT")


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu_model": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": " ".join(f"{v:.1f}" for v in os.getloadavg())}


def micro() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "micro.json"
        done = subprocess.run([sys.executable, "-m", "pytest", "bench/micro", "--benchmark-only",
                               "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}"],
                              cwd=ROOT, capture_output=True, text=True)
        if not out.exists():
            raise RuntimeError(f"pytest exited {done.returncode}: {done.stdout[-500:]}")
        data = json.loads(out.read_text())
    benchmarks = [{"name": b["name"], "group": b["group"], "median_s": b["stats"]["median"],
                   "mean_s": b["stats"]["mean"], "rounds": b["stats"]["rounds"],
                   "bytes": b["extra_info"].get("bytes")} for b in data["benchmarks"]]
    result: dict[str, Any] = {"benchmarks": benchmarks}
    if done.returncode != 0:
        result["failed"] = done.stdout[-1000:]
    return result


def in_vm(module: str, report: str, variables: tuple[str, ...], *extra: str,
          memory: str = "3G") -> dict[str, Any]:
    """One VM boot running ``python -m module``; the guest writes ``reports/<report>``."""
    out = REPORTS / report
    out.unlink(missing_ok=True)
    limit = os.environ.get("PLOYZ_BENCH_VM_TIMEOUT", "1500")
    # the guest gets a fresh environment: hand it the suite's settings explicitly
    settings = [f"{k}={os.environ[k]}" for k in variables if k in os.environ]
    done = subprocess.run([sys.executable, "-m", "ployz.sandbox.vm", "--timeout", limit,
                           "--memory", memory, "run", "--", "env", *settings, *extra,
                           sys.executable, "-m", module],
                          cwd=ROOT, capture_output=True, text=True)
    if not out.exists():
        raise RuntimeError(f"the VM run exited {done.returncode}: "
                           f"{(done.stdout + done.stderr)[-800:]}")
    result = json.loads(out.read_text())
    if not result.get("complete"):  # what it measured before the time limit still counts
        result["incomplete"] = f"the VM run stopped early: {(done.stdout + done.stderr)[-300:]}"
    return result


def zfs_peers() -> dict[str, Any]:
    # bzfs keeps its ssh sockets under the user's ~/.ssh (from the password database, not
    # $HOME) and creates it if missing; the guest sees this machine's home read-only
    ssh_dir = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    return in_vm("bench.zfs_peers", "bench-zfs-peers.json", ZFS_VARS)


def migration() -> dict[str, Any]:
    # Each machine's pool must hold the largest volume plus its snapshots; the pools are
    # sparse files in the guest's memory, hence the larger VM.
    return in_vm("bench.migration", "bench-migration.json", MIGRATION_VARS,
                 "PLOYZ_SANDBOX_POOL_SIZE=3G", memory="8G")


def gateway() -> dict[str, Any]:
    """Imported here, like the loopback suite."""
    from bench.gateway import suite
    return suite.run()


def loopback() -> dict[str, Any]:
    """Imported here, so that an engine that does not import fails this suite alone."""
    from bench.transfer import bench_loopback
    return bench_loopback.run()


SUITES: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "micro": ("micro", micro), "datapath": ("datapath", run_suite),
    "loopback": ("loopback", loopback),
    "zfs": ("zfs_peers", zfs_peers), "migration": ("migration", migration),
    "gateway": ("gateway", gateway)}


def main() -> None:
    exit_on_sigterm()
    chosen = os.environ.get("PLOYZ_BENCH_SUITES", ",".join(SUITES)).split(",")
    results: dict[str, Any] = {"command": report.COMMAND, "machine": machine(),
                               "settings": {k: os.environ[k] for k in SIZE_VARS
                                            if k in os.environ}}
    if os.environ.get("PLOYZ_BENCH_MERGE") == "1":
        kept = json.loads((report.RESULTS / "results.json").read_text())
        measured = kept.get("measured") or {key: kept["machine"]["date"]
                                            for key, _ in SUITES.values() if key in kept}
        kept["measured"] = measured
        kept["settings"] = {**kept.get("settings", {}), **results["settings"]}
        results = kept
    for name in chosen:
        key, suite = SUITES[name]
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            results[key] = suite()
        except Exception as exc:  # recorded, so the report says what could not run
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        if "measured" in results:
            results["measured"][key] = machine()["date"]
        results.setdefault("durations_s", {})[name] = round(time.monotonic() - started, 1)
    report.write_all(results)
    print(f"bench: wrote {report.RESULTS.relative_to(ROOT)}/ and the README section",
          file=sys.stderr)


if __name__ == "__main__":
    main()
