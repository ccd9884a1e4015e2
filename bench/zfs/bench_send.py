"""``ployz.zfs.send`` into a pipe against the ``zfs send`` command line, same snapshot, same run.

Runs inside the ZFS VM (``make bench-zfs``): absolute speeds there are emulation speeds, so only
the ratio means anything. Each round drains the stream with splice(2) into /dev/null, so both
contenders pay the same reader; rounds alternate to spread the machine's noise evenly.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.splice import splice_all
from ployz import zfs

MiB = 1 << 20
SIZE = int(os.environ.get("PLOYZ_BENCH_SEND_MIB", "256")) * MiB
ROUNDS = int(os.environ.get("PLOYZ_BENCH_ROUNDS", "5"))


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def drain(fd: int, sink: int, moved: list[int]) -> None:
    moved.append(splice_all(fd, sink))


def time_library(snapshot: str, sink: int) -> tuple[float, int]:
    r, w = os.pipe()
    moved: list[int] = []
    reader = threading.Thread(target=drain, args=(r, sink, moved))
    start = time.perf_counter()
    reader.start()
    try:
        zfs.send(snapshot, w)
    finally:
        os.close(w)
    reader.join()
    elapsed = time.perf_counter() - start
    os.close(r)
    return elapsed, moved[0]


def time_cli(snapshot: str, sink: int) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(["zfs", "send", "-L", "-e", "-c", snapshot], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    moved = splice_all(proc.stdout.fileno(), sink)
    if proc.wait() != 0:
        raise RuntimeError("zfs send failed")
    return time.perf_counter() - start, moved


def main() -> int:
    pool = f"bench{uuid.uuid4().hex[:6]}"
    image = Path(tempfile.mkdtemp()) / "pool.img"
    sh("truncate", "-s", f"{SIZE * 3 // MiB}M", str(image))
    sh("zpool", "create", "-f", "-O", "compression=off", "-m", f"/run/{pool}", pool, str(image))
    try:
        fs = f"{pool}/data"
        zfs.create(fs)
        zfs.mount(fs, f"/run/{fs}")
        with open(f"/run/{fs}/blob", "wb") as f:
            for _ in range(SIZE // MiB):
                f.write(os.urandom(MiB))
        sh("sync")
        zfs.snapshot([f"{fs}@bench"])
        snapshot = f"{fs}@bench"
        lib_times, cli_times = [], []
        with open("/dev/null", "wb") as null:
            time_library(snapshot, null.fileno())  # warm the ARC for both contenders
            for _ in range(ROUNDS):
                t, lib_bytes = time_library(snapshot, null.fileno())
                lib_times.append(t)
                t, cli_bytes = time_cli(snapshot, null.fileno())
                cli_times.append(t)
        lib_s, cli_s = statistics.median(lib_times), statistics.median(cli_times)
        result = {
            "benchmark": "zfs_send_library_vs_cli",
            "machine": {"node": platform.node(), "kernel": platform.release(),
                        "cpus": os.cpu_count()},
            "stream_bytes": {"library": lib_bytes, "cli": cli_bytes},
            "rounds": ROUNDS,
            "seconds_median": {"library": lib_s, "cli": cli_s},
            "throughput_mb_s": {"library": lib_bytes / lib_s / 1e6,
                                "cli": cli_bytes / cli_s / 1e6},
            "ratio_library_to_cli": cli_s / lib_s,
            "target": 0.95,
        }
    finally:
        sh("zpool", "destroy", "-f", pool)
        image.unlink(missing_ok=True)
    print(json.dumps(result, indent=2))
    out = Path(os.environ.get("PLOYZ_REPORTS", ".")) / "bench-zfs-send.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
