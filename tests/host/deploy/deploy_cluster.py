"""A real SQLite control plane seeded through its API (the cluster, trusting the operator key,
and its machines), an operator key, ``ployzctl`` run as a
subprocess against them, and a dump of every stored document."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ployz.control import Capacity, ControlPlane, Machine, open_control_plane
from ployz.transfer.keys import generate_private_key, public_key_text

GIB = 1 << 30


@dataclass
class Cluster:
    """A control plane with machines as if their agents had heartbeated:
    ``machine-a`` (3 GiB free), ``machine-b`` (1 GiB free) and ``machine-c`` (draining)."""

    db: Path
    key: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def plane(self) -> ControlPlane:
        return open_control_plane(self.url)

    def dump(self) -> list[tuple[str, str, int, bytes]]:
        """Every document with its revision: equal dumps mean nothing was written."""
        with sqlite3.connect(self.db) as db:
            return db.execute(
                "SELECT kind, key, revision, value FROM documents ORDER BY kind, key"
            ).fetchall()

    def ployzctl(self, *args: str, stdin: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PLOYZ_CONTROL": self.url, "PLOYZ_KEY": str(self.key),
                       **(env or {})}
        return subprocess.run([sys.executable, "-m", "ployzctl", *args], input=stdin,
                              capture_output=True, text=True, env=environment, timeout=300)


def make_cluster(root: Path) -> Cluster:
    cluster = Cluster(root / "control.db", root / "operator.key")
    key = generate_private_key(cluster.key)
    with cluster.plane() as cp:
        cp.create_cluster("test", [public_key_text(key.public_key())])
        for i, (machine_id, free) in enumerate(
            (("machine-a", 3 * GIB), ("machine-b", GIB), ("machine-c", 3 * GIB)), start=2
        ):
            cp.register_machine(Machine(id=machine_id, overlay_ip=f"10.210.0.{i}",
                                        subnet=f"10.210.{i}.0/24"))
            cp.heartbeat(machine_id, Capacity(pool_size=4 * GIB, pool_free=free,
                                              pool_used=4 * GIB - free, containers=i - 2))
        cp.set_lifecycle("machine-c", "draining")
    return cluster
