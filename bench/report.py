"""Turns ``bench/results/results.json`` into the Markdown table, the PNG charts and the README's
performance section. Everything shown is computed from that one file, so the published numbers
are always those of one run, and ``python -m bench.report`` redraws them without re-measuring.

Ratios are ours divided by the contender's throughput: above 1 ours is faster.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parents[1] / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
OURS = "ployz_auto"  # the default codec stands for the engine in the ratios
COMMAND = "make bench"


def cell(text: str) -> str:
    """Table-safe: contender labels are shell pipelines, whose ``|`` would split a cell, and
    error messages span lines, which would end the table."""
    return " ".join(text.split()).replace("|", "\\|")


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "n/a"


def over(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def rate(entry: dict[str, Any], key: str = "GB_per_s") -> float | None:
    return None if "error" in entry else entry.get(key)


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    line = (f"{m['cpu_model']}, {m['cores']} cores, kernel {m['kernel']}, {m['date']} "
            f"(load average {m['load_average']} at the start)")
    later = {suite: when for suite, when in results.get("measured", {}).items()
             if when != m["date"]}
    if later:
        line += ("; some suites measured later, on a machine of the same kind: "
                 + ", ".join(f"{suite} {when}" for suite, when in sorted(later.items())))
    return line


# -- host data path ---------------------------------------------------------------------------

def datapath_tables(datapath: dict[str, Any]) -> list[str]:
    out = [f"Streams of {datapath['bytes'] / 2**20:.0f} MiB, tmpfs file to tmpfs file, "
           f"median of {datapath['rounds']} round(s). Each cell: throughput in GB/s, then ours "
           f"(codec auto) divided by it.", ""]
    for link, kinds in datapath["links"].items():
        names = list(next(iter(kinds.values())))
        out += [f"**{link}**", "",
                "| contender | " + " | ".join(kinds) + " | CPU s/GB (" + " / ".join(kinds)
                + ") | wire bytes / stream (" + " / ".join(kinds) + ") |",
                "|---|" + "---|" * (len(kinds) + 2)]
        for name in names:
            cells, cpus, wires = [], [], []
            for entries in kinds.values():
                entry, ours = entries[name], rate(entries[OURS])
                if "error" in entry:
                    cells.append("could not run (below)")
                    cpus.append("-")
                    wires.append("-")
                    continue
                cells.append(f"{entry['GB_per_s']:.3f} ({ratio(ours, entry['GB_per_s'])})")
                cpus.append(f"{entry['cpu_s_per_GB']:.2f}")
                wires.append(f"{entry['wire_bytes'] / datapath['bytes']:.3f}")
            label = next(iter(kinds.values()))[name]["label"]
            out.append(f"| {cell(label)} | " + " | ".join(cells) + f" | {' / '.join(cpus)} | "
                       f"{' / '.join(wires)} |")
        out.append("")
        if link == "wireguard-go":
            out += ["CPU s/GB counts the contender's processes; the two wireguard-go daemons' "
                    "own CPU is recorded separately in results.json (`tunnel_cpu_s_per_GB`).",
                    ""]
    return out + failures(datapath["links"])


def failures(links: dict[str, Any]) -> list[str]:
    lines = [f"- {link}, {kind}, {entry['label']}: {entry['error']}"
             for link, kinds in links.items() for kind, entries in kinds.items()
             for entry in entries.values() if "error" in entry]
    return (["Contenders that could not run, and why:", "", *lines, ""]) if lines else []


# -- the engine in one process over loopback -----------------------------------------------------

def loopback_table(loopback: dict[str, Any]) -> list[str]:
    """One row per comparison ``bench.transfer.bench_loopback`` defines, so a comparison added
    there shows here without a change."""
    if "error" in loopback:
        return [f"The loopback benchmark could not run: {cell(loopback['error'])}", ""]
    runs = {**loopback["runs"], **loopback["limited_100MBps"]["runs"]}

    def shown(name: str, named: bool = False) -> str:
        run = runs[name]
        low, high = run["GB_per_s_range"]
        return (f"{cell(run['label']) + ': ' if named else ''}{run['GB_per_s']:.3f} GB/s "
                f"({low:.3f}-{high:.3f}), {run['cpu_s_per_GB']:.2f} CPU s/GB")

    out = [f"`python -m bench.transfer.bench_loopback`: {loopback['bytes'] / 2**20:.0f} MiB of "
           f"mixed data (the 100 MB/s rows: {loopback['limited_100MBps']['bytes'] / 2**20:.0f} "
           f"MiB), tmpfs to tmpfs over 127.0.0.1, sender and receiver in one process; medians "
           f"of {loopback['rounds']} round(s), contenders interleaved and each round starting "
           "one contender later, per-round ratios and GB/s ranges in parentheses. CPU s/GB "
           "counts every process and thread.", "",
           "| comparison | ratio (range) | engine | baseline |", "|---|---|---|---|"]
    for entry in loopback["ratios"].values():
        low, high = entry["range"]
        baseline = min(entry["baselines"], key=lambda name: runs[name]["seconds"])
        out.append(f"| {cell(entry['what'])} | {entry['ratio']:.2f}x ({low:.2f}-{high:.2f}) | "
                   f"{shown(entry['ours'])} | {shown(baseline, len(entry['baselines']) > 1)} |")
    zstd, zstd_nc = runs["engine_zstd"]["wire_bytes"], runs["zstd_nc"]["wire_bytes"]
    out.append(f"| codec zstd wire bytes vs zstd -1 | {loopback['zstd_wire_vs_zstd_1']:.3f}x | "
               f"{zstd / 1e6:.1f} MB | {zstd_nc / 1e6:.1f} MB |")
    if "shared_limit_rate_vs_limit" in loopback:  # runs before the shared limit lack it
        out.append(f"| two sends sharing a 100 MB/s limit: their rate vs the limit (at most "
                   f"1.05x) | {loopback['shared_limit_rate_vs_limit']:.3f}x | "
                   f"{shown('limited_pair_shared')} | - |")
    fixed = ", ".join(f"`{name}` {seconds:.3f} s"
                      for name, seconds in loopback.get("fixed_seconds", {}).items())
    if fixed:
        out += ["", f"Seconds per 4 KiB transfer (the fixed cost inside each figure): {fixed}."]
    return [*out, ""]


def targets(results: dict[str, Any]) -> list[str]:
    """The transfer engine's published targets, checked against this run."""
    rows: list[tuple[str, str, str]] = []
    links = results.get("datapath", {}).get("links", {})

    def speed(link: str, kind: str, name: str) -> float | None:
        return rate(links.get(link, {}).get(kind, {}).get(name, {"error": "absent"}))

    def add(what: str, value: float | None, target: float, more_is_better: bool = True,
            unit: str = "x") -> None:
        required = f"{'>=' if more_is_better else '<='} {target}{unit}"
        if value is None:
            rows.append((what, "n/a", required))
            return
        met = value >= target if more_is_better else value <= target
        rows.append((what, f"{value:.3f}{unit} {'(met)' if met else '(missed)'}", required))

    add("authenticated stream (codec none) vs mbuffer, loopback, mixed",
        over(speed("loopback", "mixed", "ployz_none"), speed("loopback", "mixed", "mbuffer")), 1.0)
    add("codec zstd vs zstd -1 -T2 | nc | zstd -d, loopback, mixed",
        over(speed("loopback", "mixed", "ployz_zstd"), speed("loopback", "mixed", "zstd_nc")),
        1.3)
    mixed = links.get("loopback", {}).get("mixed", {})
    if "error" not in mixed.get("ployz_zstd", {"error": 1}) and "error" not in mixed.get(
            "zstd_nc", {"error": 1}):
        add("codec zstd wire bytes vs zstd -1", mixed["ployz_zstd"]["wire_bytes"]
            / mixed["zstd_nc"]["wire_bytes"], 1.05, more_is_better=False)
    for link, kinds in links.items():
        for kind in kinds:
            best = max((speed(link, kind, n) or 0) for n in ("ployz_none", "ployz_zstd"))
            add(f"codec auto vs the better fixed codec, {link}, {kind}",
                over(speed(link, kind, "ployz_auto"), best), 0.9)
    if "wireguard-go" in links:
        best = max((speed("wireguard-go", "mixed", n) or 0)
                   for n in ("ployz_none", "ployz_zstd", "ployz_auto"))
        add("best codec vs iperf3 through the same wireguard-go tunnel, mixed",
            over(best, speed("wireguard-go", "mixed", "iperf3")), 0.85)
    loopback = results.get("loopback", {})
    if "error" in loopback:  # its targets are defined by the run that failed
        rows.append(("the loopback benchmark's targets", "n/a: it could not run", "-"))
    for entry in loopback.get("ratios", {}).values():
        if entry.get("target") is not None:
            add(f"{entry['what']}, loopback benchmark", entry["ratio"], entry["target"])
    zfs = results.get("zfs_peers", {})
    if "error" not in zfs and zfs:
        add("ZFS through the engine vs local zfs send | zfs recv (incompressible)",
            over(zfs_rate(zfs, "ployz_auto", "incompressible"),
                 zfs_rate(zfs, "zfs_pipe", "incompressible")), 0.9)
    for what, value, most, unit in migration_targets(results.get("migration", {})):
        add(what, value, most, more_is_better=False, unit=unit)
    return ["| target | this run | required |", "|---|---|---|",
            *[f"| {cell(a)} | {b} | {c} |" for a, b, c in rows], ""]


# -- ZFS peers in the VM ----------------------------------------------------------------------

def zfs_rate(zfs: dict[str, Any], name: str, dataset: str) -> float | None:
    entry = zfs["contenders"].get(name, {})
    run = entry.get("runs", {}).get(dataset)
    return None if not run or "error" in run else run["MB_per_s"]


def zfs_tables(zfs: dict[str, Any]) -> list[str]:
    if "error" in zfs:
        return [f"The ZFS suite could not run: {zfs['error']}", ""]
    sets = zfs["datasets"]
    out = [f"Inside the VM (software-emulated, {zfs['machine']['cpus']} vCPUs whose model "
           "leaves out the fast-string copies that emulation runs a byte at a time, see "
           "`bench/results/NOTES.md`; absolute speeds are emulation speeds, compare ratios). "
           "Snapshots: "
           + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in sets.items())
           + ". Each cell: MB/s of stream over the whole command (fixed costs included), then "
           "ours (codec auto) divided by it. Fixed cost: seconds to replicate the tiny "
           "dataset.", "",
           "| contender | " + " | ".join(d for d in sets if d != "tiny")
           + " | fixed cost (s) |",
           "|---|" + "---|" * len(sets)]
    for _name, entry in zfs["contenders"].items():
        if "error" in entry:
            out.append(f"| {cell(entry['label'])} | could not run: {cell(entry['error'])} |"
                       + " |" * (len(sets) - 1))
            continue
        cells = []
        for dataset in sets:
            if dataset == "tiny":
                continue
            run = entry["runs"].get(dataset, {"error": "not reached before the VM's time "
                                                       "limit" if "incomplete" in zfs
                                              else "not run"})
            cells.append(f"could not run: {cell(run['error'])}" if "error" in run else
                         f"{run['MB_per_s']:.1f} "
                         f"({ratio(zfs_rate(zfs, OURS, dataset), run['MB_per_s'])})")
        tiny = entry["runs"].get("tiny", {})
        cells.append(f"{tiny['seconds']:.2f}" if "seconds" in tiny else "n/a")
        out.append(f"| {cell(entry['label'])} | " + " | ".join(cells) + " |")
    return [*out, ""]


# -- migration in the sandbox ----------------------------------------------------------------

STEPS = ("stop", "final_snapshot", "final_send", "create", "start", "ready")


def window(entry: dict[str, Any]) -> float | None:
    return None if "error" in entry else entry["cutover_s"]["total"]


def client_gap(entry: dict[str, Any]) -> float | None:
    """What the client on the third machine saw: its last answer from the old instance to its
    first from the new (None: not measured, or no answer on one side)."""
    return None if "error" in entry else entry.get("client", {}).get("client_gap_s")


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


ESTIMATED = (("initial_bytes", "bytes"), ("seconds", "whole time"),
             ("window_seconds", "window"))
"""The estimate's figures checked against what the run measured, with their targets."""
ESTIMATE_TARGETS = {"initial_bytes": 0.05, "seconds": 0.25, "window_seconds": 0.5}


def estimate_error(entry: dict[str, Any], field: str) -> float | None:
    """|estimate - actual| / actual for one figure of one run (None: not both known)."""
    estimate, actual = entry.get("estimate") or {}, entry.get("actual") or {}
    predicted, measured = estimate.get(field), actual.get(field)
    if predicted is None or not measured:
        return None
    return float(abs(predicted - measured) / measured)


def estimates_table(migration: dict[str, Any]) -> list[str]:
    """What each preview predicted against what its apply measured."""
    rows = []
    for mib, runs in migration.get("sizes", {}).items():
        entry = runs.get("ours", {})
        if "estimate" not in entry:
            continue
        e, a = entry["estimate"], entry["actual"]
        cells = [f"{_figure(f, e.get(f))} / {_figure(f, a.get(f))} "
                 f"({_percent(estimate_error(entry, f))})" for f, _ in ESTIMATED]
        rows.append(f"| {mib} MiB | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["Each migration's estimate (what `migrate preview` and the run's start predicted, "
            "from the measured write rate, link and costs) against what it measured: "
            "estimate / actual (error).", "",
            "| volume | " + " | ".join(label for _, label in ESTIMATED) + " |",
            "|---|" + "---|" * len(ESTIMATED), *rows, ""]


def _figure(field: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value / 2**20:.1f} MiB" if field.endswith("bytes") else f"{value:.1f} s"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def migration_table(migration: dict[str, Any]) -> list[str]:
    if "error" in migration:
        return [f"The migration benchmark could not run: {migration['error']}", ""]
    out = ["A service writing continuously (a line and a 64 KiB random block every ~0.1 s) to "
           "a volume of each size, moved machine-a -> machine-b in the sandbox cluster (kernel "
           "WireGuard between network namespaces, inside the software-emulated VM). The window "
           "runs from the source container's stop to the target container's first healthy "
           "answer; stop-first stops, snapshots, sends everything, creates and starts, then "
           "commits the move as migrate does. The client gap is what a client on machine-c "
           "saw, asking every 50 ms by name, address and gateway in turn: from the old "
           "instance's last answer to the new one's first, so it adds the commit and the route "
           "flip on every machine to the window. Steps in seconds.", "",
           "| volume | migration | window (s) | client gap (s) | ours / stop-first | "
           + " | ".join(STEPS) + " | whole run (s) |",
           "|---|---|---|---|---|" + "---|" * (len(STEPS) + 1)]
    for mib, runs in migration["sizes"].items():
        base = window(runs.get("stop_first", {"error": "absent"}))
        for name, label in (("ours", "ployzctl migrate apply"), ("stop_first", "stop-first")):
            entry = runs.get(name, {"error": "absent"})
            if "error" in entry:
                out.append(f"| {mib} MiB | {label} | could not run: {cell(entry['error'])} |"
                           + " |" * (len(STEPS) + 3))
                continue
            steps = entry["cutover_s"]
            ours = window(runs.get("ours", {"error": "absent"}))
            out.append(f"| {mib} MiB | {label} | {steps['total']:.1f} | "
                       f"{seconds(client_gap(entry))} | "
                       f"{ratio(ours, base) if name == 'ours' else ''} | "
                       + " | ".join(f"{steps[s]:.1f}" if s in steps else "-" for s in STEPS)
                       + f" | {entry['seconds']:.1f} |")
    return [*out, "", *estimates_table(migration), *volumes_table(migration),
            *drain_table(migration)]


def volumes_table(migration: dict[str, Any]) -> list[str]:
    volumes = migration.get("volumes")
    if not volumes:
        return []
    rows = []
    for count in ("1", "4"):
        entry = volumes.get(count, {"error": "absent"})
        rows.append(f"| {count} | could not run: {cell(entry['error'])} | |" if "error" in entry
                    else f"| {count} | {entry['cutover_s']['total']:.1f} | "
                         f"{entry['seconds']:.1f} |")
    return [f"One service with one volume, and one with four, of {volumes['mib']} MiB each "
            "(each written to): the volumes move at once, in pre-copy and in the final send.",
            "", "| volumes | window (s) | whole run (s) |", "|---|---|---|", *rows, "",
            *bwlimit_lines(volumes.get("bwlimit"))]


def bwlimit_lines(limited: dict[str, Any] | None) -> list[str]:
    if not limited:
        return []
    head = (f"The {limited['volumes']} volumes again under `--bwlimit "
            f"{limited['limit_bytes_per_s']}` (bytes/s, half their unlimited rate): ")
    if "error" in limited:
        return [head + f"could not run: {cell(limited['error'])}", ""]
    return [head + f"their full sends together carried {limited['rate_bytes_per_s'] / 1e6:.2f} MB/s"
            f", {limited['rate_bytes_per_s'] / limited['limit_bytes_per_s']:.2f}x the limit "
            f"({limited['limit_bytes_per_s'] / 1e6:.2f} MB/s).",
            ""]


def bwlimit_share(volumes: dict[str, Any]) -> float | None:
    limited = volumes.get("bwlimit") or {}
    rate = limited.get("rate_bytes_per_s")
    return None if rate is None else rate / limited["limit_bytes_per_s"]


def drain_table(migration: dict[str, Any]) -> list[str]:
    drain = migration.get("drain")
    if not drain:
        return []
    rows = [f"| {parallel} | {', '.join(f'{s:.1f}' for s in runs) or '-'} | "
            f"{cell(drain['errors'].get(parallel, ''))} |"
            for parallel, runs in drain["seconds"].items()]
    return [f"`machine drain machine-a --migrate` of {drain['services']} services with a "
            f"{drain['mib']} MiB volume each, by `--parallel`: seconds of the whole drain.", "",
            "| --parallel | seconds | error |", "|---|---|---|", *rows, ""]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def migration_targets(migration: dict[str, Any],
                      ) -> list[tuple[str, float | None, float, str]]:
    """(what, value, most allowed, unit): the window's share of stop-first's at the largest
    size and its growth from the smallest size to the largest; the client's gap beyond the
    window at each size, and its growth; the estimates' errors; four volumes' window against
    one's, and a parallel drain against a serial one."""
    sizes = sorted(migration.get("sizes", {}), key=int)
    if not sizes:
        return volume_and_drain_targets(migration)
    low, high = migration["sizes"][sizes[0]], migration["sizes"][sizes[-1]]

    def of(runs: dict[str, Any], name: str) -> float | None:
        return window(runs.get(name, {"error": "absent"}))

    def gap(runs: dict[str, Any]) -> float | None:
        return client_gap(runs.get("ours", {"error": "absent"}))

    def beyond(runs: dict[str, Any]) -> float | None:
        measured, server = gap(runs), of(runs, "ours")
        return None if measured is None or server is None else measured - server

    return [(f"migrate apply cutover window vs stop-first, {sizes[-1]} MiB",
             over(of(high, "ours"), of(high, "stop_first")), 0.2, "x"),
            (f"migrate apply cutover window growth, {sizes[0]} -> {sizes[-1]} MiB",
             over(of(high, "ours"), of(low, "ours")), 1.5, "x"),
            *[(f"client gap beyond the cutover window, {mib} MiB",
               beyond(migration["sizes"][mib]), 0.5, " s") for mib in sizes],
            (f"client gap growth, {sizes[0]} -> {sizes[-1]} MiB",
             over(gap(high), gap(low)), 1.5, "x"),
            *[(f"estimate error, {label}, {mib} MiB",
               estimate_error(migration["sizes"][mib].get("ours", {}), field),
               ESTIMATE_TARGETS[field], "x") for mib in sizes for field, label in ESTIMATED],
            *volume_and_drain_targets(migration)]


def volume_and_drain_targets(migration: dict[str, Any],
                             ) -> list[tuple[str, float | None, float, str]]:
    targets: list[tuple[str, float | None, float, str]] = []
    volumes = migration.get("volumes")
    if volumes:
        targets.append(("cutover window with 4 volumes vs with 1",
                        over(window(volumes.get("4", {"error": "absent"})),
                             window(volumes.get("1", {"error": "absent"}))), 1.3, "x"))
        if "bwlimit" in volumes:
            targets.append(("four concurrent sends' rate under --bwlimit vs the limit",
                            bwlimit_share(volumes), 1.05, "x"))
    drain = migration.get("drain")
    if drain:
        targets.append((f"drain of {drain['services']} services, --parallel 2 vs --parallel 1",
                        over(_median(drain["seconds"].get("2", [])),
                             _median(drain["seconds"].get("1", []))), 0.7, "x"))
    return targets


# -- the gateway --------------------------------------------------------------------------------

def gateway_table(gateway: dict[str, Any]) -> list[str]:
    if "error" in gateway:
        return [f"The gateway benchmark could not run: {gateway['error']}", ""]
    medians = gateway["medians"]
    out = [f"HAProxy as `machine init` configures it, its map set through the runtime API, "
           f"against a direct connection to the same busybox httpd, on the host's loopback; "
           f"medians of {gateway['rounds']} rounds (order rotated). Throughput: one download of "
           f"{gateway['mib']} MiB; latency: {gateway['requests']} GETs of a tiny file, each on "
           "a new connection.", "",
           "| path | MB/s | p50 (ms) | p99 (ms) |", "|---|---|---|---|"]
    for name in ("direct", "gateway"):
        m = medians[name]
        out.append(f"| {name} | {m['MB_per_s']:.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} |")
    out += ["", f"The gateway carries {gateway['throughput_ratio']:.2f}x the direct throughput "
            f"and adds {gateway['added_p50_ms']:.3f} ms to the median request "
            f"({gateway['added_p99_ms']:.3f} ms at the 99th percentile).", ""]
    return out


# -- micro-benchmarks -------------------------------------------------------------------------

def micro_table(micro: dict[str, Any]) -> list[str]:
    if "error" in micro:
        return [f"The micro-benchmarks could not run: {micro['error']}", ""]
    out = ["| benchmark | median | per second |", "|---|---|---|"]
    for bench in micro["benchmarks"]:
        median = bench["median_s"]
        shown = f"{median * 1e6:.1f} us" if median < 1e-3 else f"{median * 1e3:.2f} ms"
        per = (f"{bench['bytes'] / median / 1e9:.2f} GB/s" if bench.get("bytes")
               else f"{1 / median:,.0f} ops")
        out.append(f"| {bench['name']} | {shown} | {per} |")
    return [*out, ""]


# -- assembling -------------------------------------------------------------------------------

def sections(results: dict[str, Any]) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    if "datapath" in results:
        dp = results["datapath"]
        parts["Host data path"] = (
            [f"The data-path suite could not run: {dp['error']}", ""] if "error" in dp
            else datapath_tables(dp))
    if "loopback" in results:
        parts["Transfer engine on loopback, one process"] = loopback_table(results["loopback"])
    if "zfs_peers" in results:
        parts["Real ZFS, in the VM"] = zfs_tables(results["zfs_peers"])
    if "migration" in results:
        parts["Migration cutover, in the sandbox"] = migration_table(results["migration"])
    if "gateway" in results:
        parts["The HTTP gateway"] = gateway_table(results["gateway"])
    parts["Targets of the transfer engine"] = targets(results)
    if "micro" in results:
        parts["Micro-benchmarks (hot path)"] = micro_table(results["micro"])
    return parts


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Benchmark results", "", f"Machine: {machine_line(results)}.", "",
             f"Reproduce with `{results['command']}`.", ""]
    for title, body in sections(results).items():
        lines += [f"## {title}", "", *body]
    return "\n".join(lines).rstrip() + "\n"


def readme_section(results: dict[str, Any], charts: list[str]) -> str:
    lines = [START, "## Performance", "",
             f"Generated from `bench/results/results.json` by `{results['command']}` (every "
             "suite's figures from one run, contenders measured side by side in it; "
             "`python -m bench.report` redraws this without measuring). Machine: "
             f"{machine_line(results)}. Ratios are ours (codec auto) divided by the "
             "contender's throughput: above 1 ours is faster. Full tables, CPU and wire bytes "
             "in `bench/results/results.md`; where ours is behind, `bench/results/NOTES.md` "
             "says why.", ""]
    for title, body in sections(results).items():
        if title.startswith("Micro"):
            continue
        lines += [f"### {title}", "", *body]
    lines += [f"![{Path(c).stem}](bench/results/{Path(c).name})" for c in charts]
    return "\n".join([*lines, "", END])


def update_readme(section: str) -> None:
    text = README.read_text()
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text,
                      flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    README.write_text(text)


def write_all(results: dict[str, Any]) -> None:
    from bench.charts import draw
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "results.md").write_text(markdown(results))
    update_readme(readme_section(results, draw(results, RESULTS)))


def main() -> None:
    write_all(json.loads((RESULTS / "results.json").read_text()))


if __name__ == "__main__":
    main()
