"""Runs both migrations of a service under continuous writes for each volume size, and writes
``$PLOYZ_REPORTS/bench-migration.json``. Runs inside the ZFS VM (``make bench`` boots it), in a
sandbox cluster of three machines whose overlay is kernel WireGuard between network namespaces:
absolute times are emulation times, the ratio between the two windows is the result.

First a small warm-up migration (see :func:`warm_up`). For each size: ``ployzctl migrate
apply`` of one deployment (its ``done`` event carries the
window broken down by step, and the whole run's seconds), then the stop-first baseline
(:mod:`.stop_first`) of a second, identical deployment. Between measurements the moved service
is removed so the pools hold one volume at a time. Each move is watched by a client on
machine-c (:mod:`ployz.sandbox.watch`) asking the service every 50 ms by name, by address and
through the gateway: the gap between the old instance's last answer and the new one's first is
the downtime a client saw, reported beside the server's window.

Then the same writer with one volume and with four (``PLOYZ_BENCH_MIGRATION_PART_MIB`` each,
default 64): the four move at once, so their cutover should stay close to one's; the four again
under ``--bwlimit`` half their unlimited rate (the sends share it); and a drain of
four such services with ``--parallel 1`` and ``--parallel 2`` (``PLOYZ_BENCH_DRAIN_ROUNDS``
rounds, order rotated).

Environment: ``PLOYZ_BENCH_MIGRATION_MIB`` (volume sizes, default ``256,1024``),
``PLOYZ_BENCH_MIGRATION_PARTS`` (default ``sizes,volumes,drain``).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.datapath.suite import env_list, exit_on_sigterm
from bench.migration.stop_first import migrate_stop_first
from bench.migration.workload import (
    Timed,
    deploy,
    manifest,
    ployzctl,
    ployzctl_timed,
    volume_names,
)
from bench.rounds import rotated
from ployz.agent.remote import RemoteAgent
from ployz.control import open_control_plane
from ployz.deploy.inspect import service_rows
from ployz.runtime.model import service_labels
from ployz.sandbox.cluster import Cluster, Machine
from ployz.sandbox.watch import Watched, WatchingClient, answered, client_gap
from ployz.transfer.keys import load_private_key

AGENT_TIMEOUT_S = 600.0
VOLUME_COUNTS = (1, 4)
DRAINED = 4
DRAIN_PARALLEL = (1, 2)
BWLIMIT_SHARE = 0.5
"""The limited run's ``--bwlimit``, as a share of the rate the unlimited run's full sends
carried together: low enough that the limit, not the link, sets the pace."""
CLIENT_START_S = 120.0
CLIENT_AFTER_S = 3.0
"""How long the client goes on asking after a move has ended: past the routing's flip."""


def agent(cluster: Cluster, machine: Machine) -> RemoteAgent:
    return cluster.agent(machine, AGENT_TIMEOUT_S)


def reason(stderr: str) -> str:
    """A failed command's error line (the first) and how its rollback ended (the last)."""
    lines = stderr.strip().splitlines() or ["(no message)"]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def ours(cluster: Cluster, namespace: str, *options: str) -> dict[str, Any]:
    run = ployzctl_timed(cluster, "migrate", "apply", f"{namespace}/writer", "--to",
                         "machine-b", "--json", *options)
    events = run.events
    if run.returncode != 0 or not events or events[-1].get("event") != "done":
        raise RuntimeError(f"migrate apply {namespace} failed: {reason(run.stderr)}")
    rounds = [{k: e[k] for k in ("kind", "bytes", "wire_bytes", "seconds", "codec")}
              for e in events if e["event"] == "transfer" and e["state"] == "done"]
    done = events[-1]
    # what the estimate was made from (the probe of the link and the share sends carry of it,
    # the costs' dates), as the plan in the run's first event says
    plan = next(e["plan"] for e in events if e["event"] == "start")
    return {"cutover_s": done["cutover_s"], "seconds": done["seconds"], "rounds": rounds,
            "routes": done["routes"], "estimate": done["estimate"], "actual": done["actual"],
            "basis": plan["estimate"]["basis"], "phases_s": run.phases_s,
            "final_sends_s": final_sends(run)}


def final_sends(run: Timed) -> dict[str, float]:
    """Where the final-send phase's time goes, from the phase's start: when the first of its
    sends started and the last ended (the bytes on the wire between), and when the start
    phase began (the record written between)."""
    began = run.phases_s["final-send"]
    at = [(t, e["state"]) for t, e in zip(run.at_s, run.events, strict=True)
          if e["event"] == "transfer" and e.get("kind") == "final"]
    return {"first_started": round(min(t for t, state in at if state == "started") - began, 3),
            "last_done": round(max(t for t, state in at if state == "done") - began, 3),
            "start": round(run.phases_s["start"] - began, 3)}


def stop_first(cluster: Cluster, namespace: str, mib: int) -> dict[str, Any]:
    a, b = cluster.machines[:2]
    with open_control_plane(cluster.control_url) as cp, agent(cluster, a) as source, \
            agent(cluster, b) as target:
        return migrate_stop_first(cp, source, target, load_private_key(cluster.operator_key),
                                  manifest(namespace, mib), a.pool, b.pool, b.id)


def instance(cluster: Cluster, machine: Machine, namespace: str) -> str:
    """The hostname (short container id) the service's instance on ``machine`` answers."""
    with agent(cluster, machine) as client:
        (container,) = client.containers.list(service_labels(namespace))
    return container.id[:12]


def watched(cluster: Cluster, namespace: str, move: Callable[[str], dict[str, Any]],
            work: Path) -> dict[str, Any]:
    """``move(namespace)``'s result, with what a client on machine-c saw of it."""
    a, b, c = cluster.machines[:3]
    with open_control_plane(cluster.control_url) as cp:
        (row,) = service_rows(cp, namespace)
    old = instance(cluster, a, namespace)
    client = WatchingClient(c, Watched(namespace, "writer", row["address"], 8080,
                                       f"{namespace}.bench", "/instance"),
                            work / f"{namespace}-client.jsonl")
    client.start()
    try:
        deadline = time.monotonic() + CLIENT_START_S
        while not answered(client.records()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the client on machine-c never reached {namespace}")
            time.sleep(0.5)
        result = move(namespace)
        time.sleep(CLIENT_AFTER_S)
    finally:
        records = client.stop()
    result["client"] = client_gap(records, old, instance(cluster, b, namespace))
    return result


def remove(cluster: Cluster, namespace: str, volumes: int = 1) -> None:
    """Removes the namespace's containers and datasets from every machine, so the next size
    finds the pools empty (the control plane's facts about it no longer matter)."""
    names = volume_names(volumes)
    for machine in cluster.machines:
        with agent(cluster, machine) as client:
            for container in client.containers.list(service_labels(namespace)):
                client.containers.remove(container.name, force=True)
            for name in names:
                dataset = f"{machine.pool}/{namespace}.{name}"
                if client.zfs.exists(dataset):
                    snapshots = [s.name for s in client.zfs.snapshots(dataset)]
                    if snapshots:
                        client.zfs.destroy_snapshots(snapshots)
                    client.zfs.destroy(dataset)


WARM_UP_MIB = 32


def warm_up(cluster: Cluster, work: Path) -> dict[str, Any]:
    """One small migration first, as a cluster in use has made before: it measures the link
    between the two machines and the costs of a cutover, which the measured runs' estimates
    start from (a first migration's estimate leaves those unknown). It runs watched by the
    same client on machine-c as they are: in this two-CPU guest the client's requests slow the
    link and the control plane, and a warm-up without it measured sends half again as fast as
    the measured runs then made."""
    namespace = "warmup"
    try:
        deploy(cluster, namespace, WARM_UP_MIB, work)
        return watched(cluster, namespace, lambda moved: ours(cluster, moved), work)
    finally:
        remove(cluster, namespace)


def measure_size(cluster: Cluster, mib: int, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, run in (("ours", lambda ns: ours(cluster, ns)),
                      ("stop_first", lambda ns: stop_first(cluster, ns, mib))):
        namespace = f"{name.replace('_', '')}{mib}"
        try:
            deploy(cluster, namespace, mib, work)
            result[name] = watched(cluster, namespace, run, work)
        except Exception as exc:  # recorded: the report names what could not run
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            remove(cluster, namespace)
        print(f"bench.migration: {mib} MiB {name}: {result[name]}", flush=True)
    return result


def measure_volumes(cluster: Cluster, mib: int, work: Path) -> dict[str, Any]:
    """The cutover of one service with one volume and of one with four (each of ``mib``
    MiB, each written to): the volumes move at once, so four should cost little more."""
    result: dict[str, Any] = {"mib": mib}
    for count in VOLUME_COUNTS:
        namespace = f"vol{count}"
        try:
            deploy(cluster, namespace, mib, work, volumes=count)
            result[str(count)] = ours(cluster, namespace)
        except Exception as exc:  # recorded: the report names what could not run
            result[str(count)] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            remove(cluster, namespace, volumes=count)
        print(f"bench.migration: {count} volume(s) of {mib} MiB: {result[str(count)]}",
              flush=True)
    unlimited = full_round_rate(result.get(str(VOLUME_COUNTS[-1]), {}))
    if unlimited:
        result["bwlimit"] = measure_bwlimit(cluster, mib, work, BWLIMIT_SHARE * unlimited)
    return result


def full_round_rate(run: dict[str, Any]) -> float | None:
    """Wire bytes per second of a migration's full sends taken together: they run at once,
    so their bytes over the longest one's time."""
    fulls = [r for r in run.get("rounds", ()) if r["kind"] == "full"]
    longest = max((r["seconds"] for r in fulls), default=0.0)
    return sum(r["wire_bytes"] for r in fulls) / longest if longest else None


def measure_bwlimit(cluster: Cluster, mib: int, work: Path, limit: float) -> dict[str, Any]:
    """The four-volume migration again under ``--bwlimit limit``: the four concurrent sends
    share the limit, so their full round together should carry about ``limit``, not more."""
    count = VOLUME_COUNTS[-1]
    namespace = "bwlimit"
    result: dict[str, Any] = {"volumes": count, "limit_bytes_per_s": round(limit)}
    try:
        deploy(cluster, namespace, mib, work, volumes=count)
        run = ours(cluster, namespace, "--bwlimit", str(round(limit)))
        result["rate_bytes_per_s"] = full_round_rate(run)
    except Exception as exc:  # recorded: the report names what could not run
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        remove(cluster, namespace, volumes=count)
    print(f"bench.migration: {count} volumes under --bwlimit: {result}", flush=True)
    return result


def measure_drain(cluster: Cluster, mib: int, rounds: int, work: Path) -> dict[str, Any]:
    """``machine drain machine-a --migrate --parallel N`` of :data:`DRAINED` services with a
    volume of ``mib`` MiB each, for each N (rotated from round to round): the whole drain, and
    when each move's phases began (where a parallel drain's time goes)."""
    seconds: dict[str, list[float]] = {str(n): [] for n in DRAIN_PARALLEL}
    moves: dict[str, list[dict[str, dict[str, float]]]] = {str(n): [] for n in DRAIN_PARALLEL}
    errors: dict[str, str] = {}
    for round_ in range(rounds):
        for parallel in rotated(DRAIN_PARALLEL, round_):
            # Names of this round's own: a moved volume's ownership outlives the service's
            # removal, so a name used again would be refused by its deploy to machine-a.
            namespaces = [f"drain{parallel}-r{round_}-{i}" for i in range(DRAINED)]
            try:
                for namespace in namespaces:
                    deploy(cluster, namespace, mib, work)
                started = time.monotonic()
                done = ployzctl_timed(cluster, "machine", "drain", "machine-a", "--migrate",
                                      "--parallel", str(parallel), "--json")
                if done.returncode != 0:
                    raise RuntimeError(drain_failure(done.events, done.stderr))
                seconds[str(parallel)].append(round(time.monotonic() - started, 3))
                moves[str(parallel)].append(
                    {service: phases for service, phases in done.moves_s.items() if service})
            except Exception as exc:  # recorded: the report names what could not run
                errors[str(parallel)] = f"{type(exc).__name__}: {exc}"
            finally:
                ployzctl(cluster, "machine", "activate", "machine-a")
                evacuate(cluster, namespaces)
                for namespace in namespaces:
                    remove(cluster, namespace)
            print(f"bench.migration: drain of {DRAINED} with --parallel {parallel}: "
                  f"{seconds[str(parallel)]}", flush=True)
    return {"services": DRAINED, "mib": mib, "seconds": seconds, "moves_s": moves,
            "errors": errors}


def evacuate(cluster: Cluster, namespaces: list[str]) -> None:
    """Moves to machine-b, under a budget any write rate fits, whatever of ``namespaces`` a
    failed drain left on machine-a, as an operator would: their facts outlive the removal of
    their containers and datasets, and the next drain of machine-a would fail on them."""
    with open_control_plane(cluster.control_url) as cp:
        left = [f"{row['namespace']}/{row['name']}" for row in service_rows(cp)
                if row["namespace"] in namespaces and row["machine"] == "machine-a"]
    for ref in left:
        ployzctl(cluster, "migrate", "apply", ref, "--to", "machine-b", "--max-downtime", "3600")


def drain_failure(events: list[dict[str, Any]], stderr: str) -> str:
    """Why ``machine drain --json`` failed: its last event names each service that did not
    move and why; a drain that failed before moving any says so on standard error."""
    results = events[-1].get("results", []) if events else []
    failed = [f"{r['service']}: {r['error']}" for r in results if r["status"] == "failed"]
    return "; ".join(failed) or reason(stderr)


def main() -> None:
    exit_on_sigterm()
    sizes = [int(s) for s in env_list("PLOYZ_BENCH_MIGRATION_MIB", ("256", "1024"))]
    parts = env_list("PLOYZ_BENCH_MIGRATION_PARTS", ("sizes", "volumes", "drain"))
    part_mib = int(os.environ.get("PLOYZ_BENCH_MIGRATION_PART_MIB", "64"))
    drain_rounds = int(os.environ.get("PLOYZ_BENCH_DRAIN_ROUNDS", "1"))
    out = Path(os.environ.get("PLOYZ_REPORTS", "reports")) / "bench-migration.json"
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                           "kernel": platform.release()},
                               "sizes": {}, "complete": False}
    cluster = Cluster(3)
    started = time.monotonic()
    try:
        cluster.start()
        results["cluster_start_s"] = round(time.monotonic() - started, 1)
        with tempfile.TemporaryDirectory() as work:
            results["warm_up"] = warm_up(cluster, Path(work))
            for mib in sizes if "sizes" in parts else ():
                results["sizes"][str(mib)] = measure_size(cluster, mib, Path(work))
                out.write_text(json.dumps(results, indent=1) + "\n")
            if "volumes" in parts:
                results["volumes"] = measure_volumes(cluster, part_mib, Path(work))
                out.write_text(json.dumps(results, indent=1) + "\n")
            if "drain" in parts:
                results["drain"] = measure_drain(cluster, part_mib, drain_rounds, Path(work))
        results["complete"] = True
    finally:
        out.write_text(json.dumps(results, indent=1) + "\n")
        cluster.stop()
