"""The gateway against a direct connection, on the host's loopback: what HAProxy (with the
configuration ``machine init`` writes, its map set through the runtime API as the agent sets
it) adds to a request's latency and takes from a large download's throughput.

The service is busybox's httpd on 127.0.0.2:8080 serving a large file and a tiny one; the
gateway listens on 127.0.0.1 and maps the request's host to it. Each round measures both ways
of reaching the service, the order rotated from round to round (see :mod:`bench.rounds`):

- throughput: ``curl`` downloads the large file once, MB/s;
- latency: ``REQUESTS`` GETs of the tiny file, each on a new connection (as a client that
  resolves the name every time would), from one Python client; their median and 99th
  percentile, and the gateway's excess over the direct median.

Environment: ``PLOYZ_BENCH_GATEWAY_MIB`` (large file, default 512), ``PLOYZ_BENCH_GATEWAY_ROUNDS``
(default 5). Writes ``$PLOYZ_REPORTS/bench-gateway.json``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.rounds import rotated
from ployz.net.gateway import Gateway, GatewayError, config_text

BACKEND = ("127.0.0.2", 8080)
GATEWAY_HOST = "127.0.0.1"
HOST = "bench.example"
REQUESTS = 400
CONTENDERS = ("direct", "gateway")


def _free_port(host: str) -> int:
    with socket.create_server((host, 0)) as probe:
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def backend(root: Path, mib: int) -> Iterator[None]:
    (root / "large").write_bytes(os.urandom(1 << 20) * mib)
    (root / "tiny").write_text("ok\n")
    process = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"{BACKEND[0]}:{BACKEND[1]}",
                                "-h", str(root)])
    try:
        _wait(lambda: _answers(*BACKEND), "busybox httpd")
        yield
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def gateway(work: Path) -> Iterator[int]:
    port = _free_port(GATEWAY_HOST)
    handle = Gateway(work / "runtime.sock", work / "hosts.map")
    handle.hosts_map.write_text("")
    config = work / "haproxy.cfg"
    config.write_text(config_text(GATEWAY_HOST, handle.socket_path, handle.hosts_map, port))
    binary = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    if binary is None:
        raise RuntimeError("haproxy is not installed: run `make setup`")
    process = subprocess.Popen([binary, "-W", "-db", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _gateway_answers(handle), "haproxy")
        handle.apply({HOST: f"{BACKEND[0]}:{BACKEND[1]}"})
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _gateway_answers(handle: Gateway) -> bool:
    try:
        handle.entries()
    except GatewayError:
        return False
    return True


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _wait(ready: Any, what: str) -> None:
    deadline = time.monotonic() + 15
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def download(host: str, port: int, host_header: str) -> float:
    """MB/s of one download of the large file."""
    done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}",
                           "-H", f"Host: {host_header}", f"http://{host}:{port}/large"],
                          capture_output=True, text=True, check=True)
    return float(done.stdout) / 1e6


def latencies(host: str, port: int, host_header: str) -> list[float]:
    """Seconds of each of ``REQUESTS`` GETs of the tiny file, each on its own connection."""
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        connection = http.client.HTTPConnection(host, port, timeout=5)
        try:
            connection.request("GET", "/tiny", headers={"Host": host_header})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{host}:{port} answered {response.status}")
        finally:
            connection.close()
        times.append(time.perf_counter() - started)
    return times


def run() -> dict[str, Any]:
    mib = int(os.environ.get("PLOYZ_BENCH_GATEWAY_MIB", "512"))
    rounds = int(os.environ.get("PLOYZ_BENCH_GATEWAY_ROUNDS", "5"))
    samples: dict[str, dict[str, list[float]]] = {
        name: {"MB_per_s": [], "p50_ms": [], "p99_ms": []} for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "www").mkdir()
        with backend(work / "www", mib), gateway(work) as port:
            targets = {"direct": (*BACKEND, f"{BACKEND[0]}:{BACKEND[1]}"),
                       "gateway": (GATEWAY_HOST, port, HOST)}
            for round_ in range(rounds):
                for name in rotated(CONTENDERS, round_):
                    host, target_port, header = targets[name]
                    samples[name]["MB_per_s"].append(download(host, target_port, header))
                    times = sorted(latencies(host, target_port, header))
                    samples[name]["p50_ms"].append(statistics.median(times) * 1e3)
                    samples[name]["p99_ms"].append(times[int(len(times) * 0.99) - 1] * 1e3)
    medians = {name: {k: round(statistics.median(v), 3) for k, v in values.items()}
               for name, values in samples.items()}
    direct, through = medians["direct"], medians["gateway"]
    return {"mib": mib, "rounds": rounds, "requests": REQUESTS, "samples": samples,
            "medians": medians,
            "throughput_ratio": round(through["MB_per_s"] / direct["MB_per_s"], 3),
            "added_p50_ms": round(through["p50_ms"] - direct["p50_ms"], 3),
            "added_p99_ms": round(through["p99_ms"] - direct["p99_ms"], 3),
            "complete": True}


def main() -> None:
    out = Path(os.environ.get("PLOYZ_REPORTS", "reports")) / "bench-gateway.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run()
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
