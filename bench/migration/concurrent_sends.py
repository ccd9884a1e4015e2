"""Small incremental sends between two sandbox agents: one alone, four at once (as a
migration of a service with four volumes sends its rounds), and the same four one after
another, in rotated order each round.

A four-volume migration's final send took four times one volume's in the bench's guest. This
separates what concurrency costs from what the bytes cost: if four at once take about as long
as four in a row, the sends share one resource (in the emulated guest its CPUs) and the window
grows with the bytes, not with a per-send cost.

Run inside the VM (``python -m ployz.sandbox.vm --memory 8G run -- env PYTHONPATH=.
python -m bench.migration.concurrent_sends``); writes ``reports/bench-concurrent-sends.json``.
Environment: ``PLOYZ_BENCH_SENDS_ROUNDS`` (default 3), ``PLOYZ_BENCH_SENDS_KIB`` (bytes
written to each volume before each send, default 1536).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.datapath.suite import exit_on_sigterm
from bench.rounds import rotated
from ployz.agent.remote import RemoteAgent
from ployz.deploy.migration.snapshot_send import send_snapshot
from ployz.sandbox.cluster import Cluster
from ployz.transfer.keys import load_private_key

VOLUMES = 4
AGENT_TIMEOUT_S = 120.0


class Volumes:
    """Four datasets on the source machine, each sent in full once to the target, then
    written to and sent incrementally as the rounds ask."""

    def __init__(self, cluster: Cluster, kib: int) -> None:
        self.cluster = cluster
        self.kib = kib
        self.source_machine, self.target_machine = cluster.machines[:2]
        self.source = cluster.agent(self.source_machine, AGENT_TIMEOUT_S)
        self.target = cluster.agent(self.target_machine, AGENT_TIMEOUT_S)
        self.key = load_private_key(cluster.operator_key)
        self.sent: dict[int, str] = {}
        self.round = 0

    def dataset(self, index: int) -> str:
        return f"{self.source_machine.pool}/sends{index}"

    def mountpoint(self, index: int) -> Path:
        return Path(f"/tmp/bench-sends{index}")

    def create(self) -> None:
        for index in range(VOLUMES):
            self.source.zfs.create(self.dataset(index), mountpoint=str(self.mountpoint(index)))
            (self.mountpoint(index) / "fill").write_bytes(os.urandom(16 << 20))
        self.snapshot_and_send(list(range(VOLUMES)), concurrent=False)

    def snapshot_and_send(self, indexes: list[int], concurrent: bool) -> dict[str, Any]:
        """Writes to each of ``indexes``, snapshots them at once, sends them; the wall time
        of the sends and each receiver's seconds."""
        self.round += 1
        for index in indexes:
            path = self.mountpoint(index) / f"round{self.round}"
            with path.open("wb") as out:
                out.write(os.urandom(self.kib << 10))
                out.flush()
                os.fsync(out.fileno())
        self.source.zfs.snapshot([self.snapshot(i) for i in indexes])
        started = time.monotonic()
        if concurrent:
            with ThreadPoolExecutor(len(indexes)) as pool:
                sends = list(pool.map(self.send, indexes))
        else:
            sends = [self.send(i) for i in indexes]
        wall = time.monotonic() - started
        for index in indexes:
            self.sent[index] = self.snapshot(index)
        return {"wall_s": round(wall, 3), "receivers_s": [s for s, _ in sends],
                "bytes": sum(b for _, b in sends)}

    def snapshot(self, index: int) -> str:
        return f"{self.dataset(index)}@r{self.round}"

    def send(self, index: int) -> tuple[float, int]:
        source: RemoteAgent = self.source.fork()
        target: RemoteAgent = self.target.fork()
        try:
            sent = send_snapshot(source, target, self.key,
                                 transfer_id=f"sends-{index}-{self.round}",
                                 snapshot=self.snapshot(index), base=self.sent.get(index),
                                 target_dataset=f"{self.target_machine.pool}/sends{index}")
            return round(sent.received.seconds, 3), sent.received.bytes
        finally:
            source.close()
            target.close()


def measure(volumes: Volumes, rounds: int) -> dict[str, Any]:
    contenders: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("one", lambda: volumes.snapshot_and_send([0], concurrent=True)),
        ("four_at_once", lambda: volumes.snapshot_and_send(list(range(VOLUMES)), True)),
        ("four_in_a_row", lambda: volumes.snapshot_and_send(list(range(VOLUMES)), False)),
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in contenders}
    for index in range(rounds):
        for name, run in rotated(contenders, index):
            runs[name].append(run())
    medians = {name: statistics.median(r["wall_s"] for r in results)
               for name, results in runs.items()}
    return {"runs": runs, "median_wall_s": medians,
            "at_once_vs_in_a_row": round(medians["four_at_once"] / medians["four_in_a_row"], 3),
            "four_at_once_vs_one": round(medians["four_at_once"] / medians["one"], 3)}


def main() -> None:
    exit_on_sigterm()
    rounds = int(os.environ.get("PLOYZ_BENCH_SENDS_ROUNDS", "3"))
    kib = int(os.environ.get("PLOYZ_BENCH_SENDS_KIB", "1536"))
    out = Path(os.environ.get("PLOYZ_REPORTS", "reports")) / "bench-concurrent-sends.json"
    cluster = Cluster(2)
    try:
        cluster.start()
        volumes = Volumes(cluster, kib)
        volumes.create()
        results = {"kib_per_volume": kib, "rounds": rounds, **measure(volumes, rounds)}
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({k: v for k, v in results.items() if k != "runs"}), flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
