"""Every contender of the data-path suite as a pair of shell commands for ``pipeline.run``: our
engine with each codec, and the tools users pipe together instead. Each gets the same source
file, writes the same sink file in tmpfs, and says how many bytes it put on the wire."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.datapath import sshd
from bench.datapath.network import Link
from bench.datapath.pipeline import Measured, Pipeline

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Setup:
    link: Link
    src: Path
    dst: Path
    work: Path  # keys and configs, kept for the whole run
    port: int


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    role: str  # "ours", "peer" or "ceiling"
    tools: tuple[str, ...]
    pipeline: Callable[[Setup], Pipeline]
    wire: Callable[[Setup, Measured], int]
    startup_cpu: Callable[[Measured], float] = lambda measured: 0.0
    delivers: bool = True  # writes the sink (iperf3 only measures the link)


def between(setup: Setup, receive: str, send: str, handshake: bool = False) -> Pipeline:
    return Pipeline(send=send, receive=receive, port=setup.port, send_ns=setup.link.send_ns,
                    receive_ns=setup.link.receive_ns, handshake=handshake)


def stream_size(setup: Setup, measured: Measured) -> int:
    return setup.src.stat().st_size


# -- our engine -------------------------------------------------------------------------------

def engine_keys(work: Path) -> tuple[Path, Path]:
    from ployz.transfer.keys import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, generate_keypair
    keys = work / "engine-keys"
    if not (keys / PRIVATE_KEY_FILE).exists():
        generate_keypair(keys)
    return keys / PRIVATE_KEY_FILE, keys / PUBLIC_KEY_FILE


def peer_command(*args: object) -> str:
    return f"cd {ROOT} && exec {sys.executable} -m bench.datapath.engine_peer " + " ".join(
        str(a) for a in args)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def engine_startup_cpu(measured: Measured) -> float:
    """CPU seconds both engine peers spent before they were ready (interpreter start-up, key
    loading), which the measurement subtracts: the pipelines compared start in milliseconds."""
    return last_json(measured.send_out)["startup_cpu"] + last_json(
        measured.receive_out)["startup_cpu"]


def engine(codec: str) -> Contender:
    def pipeline(setup: Setup) -> Pipeline:
        private, public = engine_keys(setup.work)
        where = f"{setup.link.receive_ip}:{setup.port}"
        return between(setup, peer_command("receive", where, public, setup.dst),
                       peer_command("send", where, private, setup.src, codec), handshake=True)

    return Contender(
        f"ployz_{codec}", f"ployz engine, codec {codec}", "ours", (),
        pipeline, lambda setup, m: last_json(m.send_out)["wire_bytes"], engine_startup_cpu)


# -- the pipelines users build instead -------------------------------------------------------

def nc(setup: Setup) -> Pipeline:
    ip, port = setup.link.receive_ip, setup.port
    return between(setup, f"nc -l {ip} {port} > {setup.dst}", f"nc -N {ip} {port} < {setup.src}")


def socat(setup: Setup) -> Pipeline:
    ip, port = setup.link.receive_ip, setup.port
    return between(setup, f"socat -u TCP-LISTEN:{port},bind={ip},reuseaddr CREATE:{setup.dst}",
                   f"socat -u OPEN:{setup.src},rdonly TCP:{ip}:{port}")


def mbuffer(setup: Setup) -> Pipeline:
    """``-I HOST:PORT`` names the host mbuffer accepts a connection from, not an address to
    listen on."""
    ip, port = setup.link.receive_ip, setup.port
    return between(setup, f"mbuffer -q -m 128M -I {setup.link.send_ip}:{port} -o {setup.dst} "
                          f"2>/dev/null",
                   f"mbuffer -q -m 128M -i {setup.src} -O {ip}:{port} 2>/dev/null")


def zstd_nc(setup: Setup) -> Pipeline:
    ip, port = setup.link.receive_ip, setup.port
    return between(setup, f"nc -l {ip} {port} | zstd -q -d -c > {setup.dst}",
                   f"zstd -q -1 -T2 -c {setup.src} | nc -N {ip} {port}")


@functools.cache
def zstd_size(src: Path, mtime: float) -> int:
    """What ``zstd -1 -T2`` makes of ``src`` (deterministic whatever the thread count),
    computed outside the measurement; ``mtime`` keys the cache to the file's content."""
    out = subprocess.run(f"zstd -q -1 -T2 -c {src} | wc -c", shell=True, check=True,
                         capture_output=True, text=True).stdout
    return int(out)


def ssh(setup: Setup) -> Pipeline:
    config = sshd.prepare(setup.work / "sshd", setup.link.receive_ip, setup.port)
    client = sshd.client_command(setup.work / "sshd", setup.link.receive_ip, setup.port,
                                 f"cat > {setup.dst}")
    return between(setup, sshd.server_command(config), f"{client} < {setup.src}")


def iperf3(setup: Setup) -> Pipeline:
    ip, port = setup.link.receive_ip, setup.port
    return between(setup, f"iperf3 -s -1 -B {ip} -p {port}",
                   f"iperf3 -c {ip} -p {port} -F {setup.src}")


CONTENDERS: tuple[Contender, ...] = (
    engine("none"), engine("zstd"), engine("auto"),
    Contender("nc", "nc to nc", "peer", ("nc",), nc, stream_size),
    Contender("socat", "socat to socat", "peer", ("socat",), socat, stream_size),
    Contender("mbuffer", "mbuffer -m 128M to mbuffer", "peer", ("mbuffer",), mbuffer,
              stream_size),
    Contender("zstd_nc", "zstd -1 -T2 | nc | zstd -d", "peer", ("zstd", "nc"), zstd_nc,
              lambda setup, m: zstd_size(setup.src, setup.src.stat().st_mtime)),
    Contender("ssh", f"ssh -c {sshd.fastest_cipher()} to a local sshd", "peer",
              ("ssh", sshd.SSHD), ssh, lambda setup, m: sshd.wire_bytes(m.send_err)),
    Contender("iperf3", "iperf3 (the link's ceiling)", "ceiling", ("iperf3",), iperf3,
              stream_size, delivers=False),
)
