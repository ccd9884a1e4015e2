"""The links the data path is measured over: loopback; a veth pair between two network
namespaces shaped to 100 MB/s; and wireguard-go between two such namespaces. The benchmark
makes the namespaces, the tunnel daemons and their keys itself and removes them on the way
out, failure or not."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

WG_PORT = 51820


@dataclass(frozen=True)
class Link:
    name: str
    receive_ip: str  # where receivers listen and senders connect
    send_ip: str  # where connections come from
    send_ns: str | None = None
    receive_ns: str | None = None
    tunnel_pids: tuple[int, ...] = field(default=())  # daemons whose CPU the link itself costs

    def tunnel_cpu(self) -> float:
        """CPU seconds the tunnel daemons have used so far (utime + stime)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.tunnel_pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total


@contextlib.contextmanager
def loopback() -> Iterator[Link]:
    yield Link("loopback", "127.0.0.1", "127.0.0.1")


def sh(*args: str, input: str | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          input=input).stdout.strip()


def wg_keypair() -> tuple[str, str]:
    private = sh("wg", "genkey")
    return private, sh("wg", "pubkey", input=private)


@contextlib.contextmanager
def veth_pair(tag: str) -> Iterator[dict[str, str]]:
    """Namespaces ``<tag>a`` and ``<tag>b`` joined by a veth pair ``<tag>va``-``<tag>vb`` with
    addresses 10.231.0.1-.2; yields the namespace of each side, removes them on the way out."""
    ns = {"a": f"{tag}a", "b": f"{tag}b"}
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{tag}va", "netns", ns["a"], "type", "veth",
           "peer", "name", f"{tag}vb", "netns", ns["b"])
        for side, index in (("a", 1), ("b", 2)):
            sh("ip", "-n", ns[side], "addr", "add", f"10.231.0.{index}/24", "dev",
               f"{tag}v{side}")
            sh("ip", "-n", ns[side], "link", "set", f"{tag}v{side}", "up")
        yield ns
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


SHAPED_RATE = "800mbit"
"""100 MB/s: a link slow enough that compressing compressible data pays."""


@contextlib.contextmanager
def shaped() -> Iterator[Link]:
    """A veth pair whose sending side a token-bucket filter limits to 100 MB/s: a link the
    engine cannot see into, unlike its own bandwidth limit."""
    tag = f"pzs{os.getpid() % 100000}"
    with veth_pair(tag) as ns:
        sh("tc", "-n", ns["a"], "qdisc", "add", "dev", f"{tag}va", "root", "tbf", "rate",
           SHAPED_RATE, "burst", "1mb", "latency", "50ms")
        yield Link("shaped-100MBps", "10.231.0.2", "10.231.0.1", ns["a"], ns["b"])


@contextlib.contextmanager
def wireguard_go() -> Iterator[Link]:
    """Namespaces A and B, a veth pair 10.231.0.1-.2 between them, and a wireguard-go tunnel
    10.232.0.1-.2 over it; receivers listen on B's tunnel address."""
    tag = f"pzb{os.getpid() % 100000}"
    devices: list[subprocess.Popen[bytes]] = []
    keys = {side: wg_keypair() for side in ("a", "b")}
    with tempfile.TemporaryDirectory(prefix="ployz-wg-") as tmp, veth_pair(tag) as ns:
        try:
            for side, index, peer in (("a", 1, "b"), ("b", 2, "a")):
                wg = f"{tag}w{side}"
                devices.append(subprocess.Popen(["ip", "netns", "exec", ns[side],
                                                 "wireguard-go", "-f", wg],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
                wait_for_device(ns[side], wg)
                key_file = Path(tmp) / f"{side}.key"
                key_file.write_text(keys[side][0])
                sh("ip", "netns", "exec", ns[side], "wg", "set", wg, "private-key",
                   str(key_file), "listen-port", str(WG_PORT), "peer", keys[peer][1],
                   "allowed-ips", f"10.232.0.{3 - index}/32",
                   "endpoint", f"10.231.0.{3 - index}:{WG_PORT}")
                sh("ip", "-n", ns[side], "addr", "add", f"10.232.0.{index}/24", "dev", wg)
                sh("ip", "-n", ns[side], "link", "set", wg, "up")
            check_tunnel(ns["a"], ns["b"])
            yield Link("wireguard-go", "10.232.0.2", "10.232.0.1", ns["a"], ns["b"],
                       tuple(device.pid for device in devices))
        finally:
            for device in devices:
                device.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    device.wait(timeout=5)
                if device.poll() is None:
                    device.kill()
                    device.wait()
            for side in ns:
                Path(f"/var/run/wireguard/{tag}w{side}.sock").unlink(missing_ok=True)


def wait_for_device(netns: str, device: str) -> None:
    deadline = time.monotonic() + 10
    while subprocess.run(["ip", "-n", netns, "link", "show", device],
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"wireguard-go did not create {device} in {netns}")
        time.sleep(0.05)


def check_tunnel(send_ns: str, receive_ns: str) -> None:
    """One TCP connection through the tunnel (no ping here): the first handshake happens now,
    not inside the first contender's measurement."""
    listener = subprocess.Popen(["ip", "netns", "exec", receive_ns, "nc", "-l", "10.232.0.2",
                                 "5999"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["ip", "netns", "exec", send_ns, "nc", "-z", "-w", "3",
                              "10.232.0.2", "5999"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("no TCP connection through the wireguard-go tunnel")
            time.sleep(0.2)
    finally:
        listener.kill()
        listener.wait()
