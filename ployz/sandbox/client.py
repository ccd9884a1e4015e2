"""A client of a service on another machine of the sandbox, as a user of the cluster has one:
the e2e tests, the migration benchmark and the demo watch a migration through it. Every ``--every``
seconds it asks the service for a path, in turn by name (resolved through the machine's DNS, on
its overlay address, every time: the answers have TTL 0), by the service's address, and through
the machine's gateway by HTTP host, and writes one JSON line per request to ``--out``:
``{"t": wall-clock seconds, "via": "name"|"address"|"gateway", "status": int|null, "body": str,
"address": resolved address|null, "error": str|null}``. It runs until SIGTERM (with
``--once``: one request each way).

Run inside the client machine's network namespace:
``python -m ployz.sandbox.client --dns IP --name NAME --address IP --port 8080
--gateway IP --host HOST --path /instance --out FILE``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import time
from typing import Any

import dns.message
import dns.query
import dns.rdatatype

TIMEOUT_S = 0.5
VIAS = ("name", "address", "gateway")


def resolve(dns_server: str, name: str) -> str:
    reply = dns.query.udp(dns.message.make_query(name, "A"), dns_server, timeout=TIMEOUT_S)
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return str(next(iter(rrset)))
    raise LookupError(f"{name}: no A record (rcode {reply.rcode()})")


def get(host: str, port: int, path: str, host_header: str | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        connection.request("GET", path, headers={"Host": host_header or f"{host}:{port}"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    finally:
        connection.close()


def probe(args: argparse.Namespace, via: str) -> dict[str, Any]:
    record: dict[str, Any] = {"via": via, "status": None, "body": "", "address": None,
                              "error": None}
    try:
        if via == "name":
            record["address"] = resolve(args.dns, args.name)
            record["status"], record["body"] = get(record["address"], args.port, args.path)
        elif via == "address":
            record["status"], record["body"] = get(args.address, args.port, args.path)
        else:
            record["status"], record["body"] = get(args.gateway, 80, args.path, args.host)
    except Exception as exc:  # every failure is a data point: the run goes on
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["t"] = time.time()
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--dns", "--name", "--address", "--gateway", "--host", "--path", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--once", action="store_true",
                        help="one request by each way, then exit")
    args = parser.parse_args()
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    with open(args.out, "a", buffering=1) as out:
        if args.once:
            for via in VIAS:
                out.write(json.dumps(probe(args, via)) + "\n")
            return
        turn = 0
        while running:
            started = time.monotonic()
            out.write(json.dumps(probe(args, VIAS[turn % len(VIAS)])) + "\n")
            turn += 1
            time.sleep(max(0.0, args.every - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
