"""Runs every contender over every link and stream kind, rounds interleaved, and summarizes
medians. A contender that cannot run (a tool missing, a failure) stays in the results with
the reason.

Environment: ``PLOYZ_BENCH_DATAPATH_MIB`` (stream size, default 1024),
``PLOYZ_BENCH_DATAPATH_ROUNDS`` (default 1), ``PLOYZ_BENCH_DATAPATH_KINDS`` (default
random,text,mixed), ``PLOYZ_BENCH_DATAPATH_LINKS`` (default loopback,shaped-100MBps,wireguard-go).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.datapath import network
from bench.datapath.contenders import CONTENDERS, Contender, Setup
from bench.datapath.data import KINDS, make_stream
from bench.datapath.pipeline import run
from bench.rounds import rotated

MiB = 1 << 20
LINKS: dict[str, Callable[[], contextlib.AbstractContextManager[network.Link]]] = {
    "loopback": network.loopback, "shaped-100MBps": network.shaped,
    "wireguard-go": network.wireguard_go}


def env_list(name: str, default: tuple[str, ...]) -> list[str]:
    return [v for v in os.environ.get(name, ",".join(default)).split(",") if v]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_tool(contender: Contender) -> str | None:
    for tool in contender.tools:
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/setup-system.sh installs it)"
    return None


def measure_once(contender: Contender, setup: Setup) -> dict[str, float]:
    cpu_before = setup.link.tunnel_cpu()
    measured = run(contender.pipeline(setup))
    tunnel = setup.link.tunnel_cpu() - cpu_before
    size = setup.src.stat().st_size
    if contender.delivers:
        got = setup.dst.stat().st_size if setup.dst.exists() else 0
        if got != size:
            raise RuntimeError(f"delivered {got} of {size} bytes")
    setup.dst.unlink(missing_ok=True)
    return {"seconds": measured.seconds,
            "cpu": measured.cpu - contender.startup_cpu(measured),
            "tunnel_cpu": tunnel, "wire": contender.wire(setup, measured)}


def summarize(samples: list[dict[str, float]], size: int) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(s[key] for s in samples)
    gb = size / 1e9
    return {"seconds": round(median("seconds"), 3),
            "GB_per_s": round(gb / median("seconds"), 3),
            "cpu_s_per_GB": round(median("cpu") / gb, 3),
            "tunnel_cpu_s_per_GB": round(median("tunnel_cpu") / gb, 3),
            "wire_bytes": int(median("wire")),
            "rounds": len(samples)}


def progress(what: str, outcome: str | dict[str, float]) -> None:
    """One line per measurement on stderr, so a long run shows where it is."""
    detail = outcome if isinstance(outcome, str) else f"{outcome['seconds']:.2f} s"
    print(f"datapath: {what}: {detail}", file=sys.stderr, flush=True)


def warm_up(link: network.Link, src: Path, work: Path) -> None:
    """One untimed run of every contender on the first full-size stream. The first run of a
    program reads it and its libraries from disk (for the engine, an interpreter and its
    packages), and the first gigabytes written to a fresh tmpfs sink are slower than later ones
    (1 GiB of codec none took 2.3, 1.5, then 0.6 s in three runs in a row, mbuffer after each
    of them 1.6, 1.5, 1.3 s): costs that would otherwise fall on whichever contender the suite
    happens to measure first."""
    for contender in CONTENDERS:
        setup = Setup(link, src, work / f"out-{contender.name}", work, free_port())
        with contextlib.suppress(Exception):  # a contender that fails shows in the real runs
            measure_once(contender, setup)
        setup.dst.unlink(missing_ok=True)


def run_link(link: network.Link, sources: dict[str, Path], work: Path,
             rounds: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for kind, src in sources.items():
        errors: dict[str, str] = {}
        samples: dict[str, list[dict[str, float]]] = {c.name: [] for c in CONTENDERS}
        for contender in CONTENDERS:
            if reason := missing_tool(contender):
                errors[contender.name] = reason
        for round_index in range(rounds):
            for contender in rotated(CONTENDERS, round_index):
                if contender.name in errors:
                    continue
                setup = Setup(link, src, work / f"out-{contender.name}", work, free_port())
                try:
                    samples[contender.name].append(measure_once(contender, setup))
                except Exception as exc:  # any failure is a result: reported, never dropped
                    errors[contender.name] = f"{type(exc).__name__}: {exc}"
                    setup.dst.unlink(missing_ok=True)
                progress(f"{link.name} {kind} {contender.name}", errors.get(contender.name)
                         or samples[contender.name][-1])
        size = src.stat().st_size
        results[kind] = {c.name: {"label": c.label, "role": c.role,
                                  **({"error": errors[c.name]} if c.name in errors
                                     else summarize(samples[c.name], size))}
                         for c in CONTENDERS}
    return results


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="ployz-datapath-", dir="/dev/shm"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_suite() -> dict[str, Any]:
    size = int(os.environ.get("PLOYZ_BENCH_DATAPATH_MIB", "1024")) * MiB
    rounds = int(os.environ.get("PLOYZ_BENCH_DATAPATH_ROUNDS", "1"))
    kinds = env_list("PLOYZ_BENCH_DATAPATH_KINDS", KINDS)
    links = env_list("PLOYZ_BENCH_DATAPATH_LINKS", tuple(LINKS))
    results: dict[str, Any] = {"bytes": size, "rounds": rounds, "links": {}}
    with workspace() as work:
        sources = {}
        for kind in kinds:
            sources[kind] = work / f"{kind}.bin"
            make_stream(kind, sources[kind], size)
        for index, name in enumerate(links):
            try:
                with LINKS[name]() as link:
                    if index == 0:
                        warm_up(link, next(iter(sources.values())), work)
                    results["links"][name] = run_link(link, sources, work, rounds)
            except Exception as exc:  # the link itself could not be made: say so per contender
                results["links"][name] = {kind: {c.name: {"label": c.label, "role": c.role,
                                                          "error": f"link {name}: {exc}"}
                                                 for c in CONTENDERS} for kind in kinds}
    return results


def exit_on_sigterm() -> None:
    """A terminated benchmark still runs its clean-up (namespaces, daemons, tmpfs files)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main() -> None:
    exit_on_sigterm()
    print(json.dumps(run_suite(), indent=1))


if __name__ == "__main__":
    main()
