"""PNG charts of one benchmark run, drawn with matplotlib from the same results as the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def bars(path: Path, title: str, ylabel: str, groups: list[str],
         series: dict[str, list[float]]) -> None:
    """Grouped bars: one group per x label, one bar per series; 0 marks a missing value."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * len(series) / 3), 4.5))
    width = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        ax.bar([g + index * width for g in range(len(groups))], values, width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def datapath_charts(datapath: dict[str, Any], out: Path) -> list[str]:
    names = []
    for link, kinds in datapath["links"].items():
        contenders = list(next(iter(kinds.values())))
        for key, unit, stem in (("GB_per_s", "GB/s", "throughput"),
                                ("cpu_s_per_GB", "CPU seconds per GB", "cpu")):
            series = {c: [kinds[k][c].get(key, 0.0) for k in kinds] for c in contenders}
            path = out / f"datapath-{link}-{stem}.png"
            bars(path, f"Host data path over {link}: {unit}", unit, list(kinds), series)
            names.append(path.name)
    return names


def zfs_chart(zfs: dict[str, Any], out: Path) -> list[str]:
    datasets = [d for d in zfs["datasets"] if d != "tiny"]
    series = {name: [entry.get("runs", {}).get(d, {}).get("MB_per_s", 0.0) for d in datasets]
              for name, entry in zfs["contenders"].items()}
    path = out / "zfs-peers-throughput.png"
    bars(path, "Real ZFS in the VM: MB/s (emulated CPU)", "MB/s", datasets, series)
    return [path.name]


def draw(results: dict[str, Any], out: Path) -> list[str]:
    names = []
    if "error" not in results.get("datapath", {"error": 1}):
        names += datapath_charts(results["datapath"], out)
    if "error" not in results.get("zfs_peers", {"error": 1}):
        names += zfs_chart(results["zfs_peers"], out)
    return names
