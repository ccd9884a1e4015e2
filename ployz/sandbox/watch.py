"""A migration watched from a client on another machine: :mod:`ployz.sandbox.client` run in a
machine's namespace, and what its answers say about the move. The e2e tests, the migration
benchmark and the demo use it alike.

Each answer of the service names the instance that gave it (the service writes its container's
hostname into a file it serves), so the client's records show when the old instance last
answered and the new one first did: the downtime a client saw, which the server's cutover window
(source stopped to target ready) does not include the route flip of.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ployz.net.names import service_name
from ployz.sandbox.cluster import Machine

VIAS = ("name", "address", "gateway")


@dataclass(frozen=True)
class Watched:
    """The service the client asks, and how."""

    namespace: str
    service: str
    address: str
    port: int
    host: str
    """Its gateway host."""
    path: str


class WatchingClient:
    """The client on ``machine``, writing its records to ``out``."""

    def __init__(self, machine: Machine, watched: Watched, out: Path) -> None:
        self.out = out
        self.argv = machine.endpoint.nsenter(
            sys.executable, "-m", "ployz.sandbox.client", "--dns", machine.overlay_ip,
            "--name", service_name(watched.namespace, watched.service),
            "--address", watched.address, "--port", str(watched.port),
            "--gateway", machine.endpoint.underlay_ip, "--host", watched.host,
            "--path", watched.path, "--out", str(out))
        self._process: subprocess.Popen[bytes] | None = None

    def once(self) -> list[dict[str, Any]]:
        """One request each way; every record so far."""
        subprocess.run([*self.argv, "--once"], check=True, timeout=300)
        return self.records()

    def start(self) -> None:
        self._process = subprocess.Popen(self.argv)

    def stop(self) -> list[dict[str, Any]]:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(timeout=60)
            self._process = None
        return self.records()

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]


def answered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == 200]


def client_gap(records: list[dict[str, Any]], old: str, new: str) -> dict[str, Any]:
    """From the old instance's last answer to the new one's first, overall and for each way
    of asking; the counts of requests and answers."""
    ok = answered(records)

    def gap(among: list[dict[str, Any]]) -> float | None:
        last_old = [r["t"] for r in among if r["body"] == old]
        first_new = [r["t"] for r in among if r["body"] == new]
        if not last_old or not first_new:
            return None
        return round(float(min(first_new)) - float(max(last_old)), 3)

    return {"client_gap_s": gap(ok), "requests": len(records), "answered": len(ok),
            "by_way": {via: gap([r for r in ok if r["via"] == via]) for via in VIAS}}
