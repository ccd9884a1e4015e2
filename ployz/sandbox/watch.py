"""A migration watched from a client on another machine: :mod:`ployz.sandbox.client` run in a
machine's namespace, and what its answers say about the move. The e2e tests, the migration
benchmark and the demo use it alike; the demo through its command line:

    python -m ployz.sandbox.watch --on machine-c --service demo/writer --path /instance \
        -- ployzctl migrate apply demo/writer --to machine-b

runs the command while the client asks, then prints what the client saw.

Each answer of the service names the instance that gave it (the service writes its container's
hostname into a file it serves), so the client's records show when the old instance last
answered and the new one first did: the downtime a client saw, which the server's cutover window
(source stopped to target ready) does not include the route flip of.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ployz.control.url import open_control_plane
from ployz.deploy.inspect import service_rows
from ployz.deploy.migration.ref import parse_service_ref
from ployz.net.names import service_name
from ployz.sandbox.cluster import Machine, sandbox_machine_named

VIAS = ("name", "address", "gateway")
FIRST_ANSWER_S = 120.0


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


def describe(records: list[dict[str, Any]], old: str, new: str, machine: str) -> str:
    """What the client saw, for a person."""
    gap = client_gap(records, old, new)
    ways = ", ".join(f"{via} {gap['by_way'][via]} s" for via in VIAS
                     if gap["by_way"][via] is not None)
    return (f"a client on {machine} asked {gap['requests']} times (every 50 ms, by name, by "
            f"address and through the gateway in turn), {gap['answered']} answered; from the "
            f"old instance's last answer to the new one's first: {gap['client_gap_s']} s "
            f"({ways})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ployz.sandbox.watch")
    parser.add_argument("--on", required=True, metavar="MACHINE", help="the client's machine")
    parser.add_argument("--service", required=True, metavar="NAMESPACE/SERVICE")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--path", default="/instance",
                        help="what the client asks: an answer that names the instance")
    parser.add_argument("--control", default=os.environ.get("PLOYZ_CONTROL"), metavar="URL",
                        help="the control plane (default $PLOYZ_CONTROL, as for ployzctl)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    ref = parse_service_ref(args.service)
    with open_control_plane(args.control) as cp:
        (row,) = [r for r in service_rows(cp, ref.namespace) if r["name"] == ref.service]
    watched = Watched(ref.namespace, ref.service, row["address"], args.port,
                      row["http_host"] or "", args.path)
    with tempfile.TemporaryDirectory() as work:
        client = WatchingClient(sandbox_machine_named(args.on), watched,
                                Path(work) / "client.jsonl")
        client.start()
        try:
            deadline = time.monotonic() + FIRST_ANSWER_S
            while not answered(client.records()):
                if time.monotonic() > deadline:
                    print(f"ployz sandbox: the client on {args.on} got no answer from "
                          f"{args.service} in {FIRST_ANSWER_S:.0f} s", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            old = Counter(r["body"] for r in answered(client.records())).most_common(1)[0][0]
            status = subprocess.run(command, check=False).returncode
            time.sleep(3)
        finally:
            records = client.stop()
    new = answered(records)[-1]["body"] if answered(records) else ""
    print(describe(records, old, new, args.on), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
