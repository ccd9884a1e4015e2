"""The transfer engine over loopback against the pipelines it replaces, same data, same run.

1 GiB of mixed data (4 MiB blocks, alternately random and word text) goes from a file in tmpfs
to a file in tmpfs:

- codec none against ``mbuffer -m 128M`` to ``mbuffer -m 128M`` over TCP;
- codec zstd (and auto) against ``zstd -1 -T2 | nc | zstd -d``, whose wire bytes are those of
  ``zstd -1 -T2``;
- codec auto against none and zstd, all three behind the engine's 100 MB/s bandwidth limit
  (256 MiB), where compression pays unlike on loopback.

Contenders alternate within a round, and each round starts one contender later, to spread the
machine's noise and the cost of going first; the medians are reported as ratios (higher
throughput ratio is better) with CPU seconds per GB (all processes and threads). Prints one
JSON object.

    python -m bench.transfer.bench_loopback  # PLOYZ_BENCH_MIB, _LIMITED_MIB, _ROUNDS
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.rounds import rotated
from ployz._pump import splice_all
from ployz._xfer import frame_checksum
from ployz.transfer import FileSink, FileSource, Receiver, Sender

MiB = 1 << 20
SIZE = int(os.environ.get("PLOYZ_BENCH_MIB", "1024")) * MiB
ROUNDS = int(os.environ.get("PLOYZ_BENCH_ROUNDS", "3"))
LIMIT = 100e6
LIMITED_SIZE = int(os.environ.get("PLOYZ_BENCH_LIMITED_MIB", "256")) * MiB
BLOCK = 4 * MiB
WORDS = (
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "they", "you", "were", "her", "she", "there", "one", "all", "we", "their", "been", "has",
    "will", "would", "snapshot", "dataset", "pool", "volume", "machine", "overlay", "container",
    "receive", "stream", "frame", "network", "deploy", "service", "replica", "commit", "cleanup",
    "drain", "lease", "placement", "quota", "mount",
)


def text_blocks(rng: random.Random, count: int = 8) -> list[bytes]:
    """``count`` distinct 4 MiB blocks of word text (about 3:1 under zstd -1)."""
    texts = []
    for _ in range(count):
        text = bytearray()
        while len(text) < BLOCK:
            text += " ".join(rng.choices(WORDS, k=4096)).encode() + b"\n"
        texts.append(bytes(text[:BLOCK]))
    return texts


def make_mixed(path: Path, size: int) -> None:
    """Alternating 4 MiB blocks of random bytes and of text; 8 distinct text blocks recur, far
    apart enough (32 MiB) that no compressor window here spans two copies."""
    rng = random.Random(1)
    texts = text_blocks(rng)
    with open(path, "wb") as out:
        for index in range(size // BLOCK):
            out.write(rng.randbytes(BLOCK) if index % 2 == 0 else texts[(index // 2) % 8])


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_pipeline(receive: str, send: str, port: int) -> None:
    """Starts the receiving shell pipeline, waits for its port, then runs the sending one.
    mbuffer and nc accept exactly one connection, so readiness is checked with ``ss`` rather
    than by connecting."""
    receiver = subprocess.Popen(["bash", "-c", receive])
    deadline = time.monotonic() + 10
    while f":{port} " not in subprocess.run(["ss", "-ltnH"], capture_output=True,
                                            text=True).stdout:
        if time.monotonic() > deadline or receiver.poll() is not None:
            raise RuntimeError(f"receiver did not listen: {receive}")
        time.sleep(0.01)
    subprocess.run(["bash", "-c", send], check=True)
    if receiver.wait(timeout=600) != 0:
        raise RuntimeError(f"receiver failed: {receive}")


def mbuffer(src: Path, dst: Path) -> int:
    port = free_port()
    run_pipeline(f"mbuffer -q -m 128M -I 127.0.0.1:{port} -o {dst} 2>/dev/null",
                 f"mbuffer -q -m 128M -i {src} -O 127.0.0.1:{port} 2>/dev/null", port)
    return src.stat().st_size


def zstd_nc(src: Path, dst: Path) -> int:
    port = free_port()
    run_pipeline(f"nc -l 127.0.0.1 {port} | zstd -q -d -c > {dst}",
                 f"zstd -q -1 -T2 -c {src} | nc -N 127.0.0.1 {port}", port)
    return int(subprocess.run(f"zstd -q -1 -T2 -c {src} | wc -c", shell=True, check=True,
                              capture_output=True, text=True).stdout)


def splice_unverified(src: Path, dst: Path) -> int:
    """The design not taken for codec none: splice(2) file -> socket -> file, no framing and no
    checksums. Its distance from engine_none is the price of verifying every byte."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def receive() -> None:
            conn, _ = listener.accept()
            with conn, open(dst, "wb") as out:
                splice_all(conn.fileno(), out.fileno())

        thread = threading.Thread(target=receive)
        thread.start()
        with socket.create_connection(listener.getsockname()) as sock, open(src, "rb") as f:
            splice_all(f.fileno(), sock.fileno())
        thread.join()
    return src.stat().st_size


def engine(codec: str, bwlimit: float = 0.0) -> Callable[[Path, Path], int]:
    key = Ed25519PrivateKey.generate()

    def run(src: Path, dst: Path) -> int:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            receiver = Receiver(listener, FileSink(dst), key.public_key())
            thread = threading.Thread(target=receiver.serve)
            thread.start()
            result = Sender(FileSource(src), listener.getsockname(), key=key, codec=codec,
                            bwlimit=bwlimit).send()
            thread.join()
        return result.wire_bytes

    return run


def measure(contender: Callable[[Path, Path], int], src: Path, dst: Path) -> dict[str, float]:
    cpu, start = cpu_seconds(), time.perf_counter()
    wire = contender(src, dst)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if dst.stat().st_size != src.stat().st_size:
        raise RuntimeError(f"{contender} delivered {dst.stat().st_size} bytes")
    dst.unlink()
    return {"seconds": seconds, "cpu": cpu, "wire": wire}


def summarize(samples: list[dict[str, float]], size: int) -> dict[str, float]:
    seconds = statistics.median(s["seconds"] for s in samples)
    cpu = statistics.median(s["cpu"] for s in samples)
    return {"seconds": round(seconds, 3), "GB_per_s": round(size / seconds / 1e9, 3),
            "cpu_s_per_GB": round(cpu / (size / 1e9), 3),
            "wire_bytes": int(statistics.median(s["wire"] for s in samples))}


def compare(contenders: dict[str, Callable[[Path, Path], int]], src: Path,
            work: Path) -> dict[str, dict[str, float]]:
    """Medians over ROUNDS rounds, contenders interleaved within each round and rotated from
    round to round."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for round_index in range(ROUNDS):
        for name in rotated(tuple(contenders), round_index):
            samples[name].append(measure(contenders[name], src, work / f"out-{name}"))
    size = src.stat().st_size
    return {name: summarize(s, size) for name, s in samples.items()}


def checksum_speed() -> float:
    """GB/s of the per-frame checksum (xxh3-64) on 1 MiB frames: the price of reading every
    byte once, which is why codec none copies through user space instead of splicing."""
    frame = random.Random(2).randbytes(MiB)
    start = time.perf_counter()
    for offset in range(512):
        frame_checksum(frame, offset)
    return 512 * MiB / (time.perf_counter() - start) / 1e9


def main() -> None:
    for tool in ("mbuffer", "nc", "zstd", "ss"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run scripts/setup-system.sh")
    contenders: dict[str, Callable[[Path, Path], int]] = {
        "mbuffer": mbuffer, "engine_none": engine("none"), "splice_unverified": splice_unverified,
        "zstd_nc": zstd_nc, "engine_zstd": engine("zstd"), "engine_auto": engine("auto"),
    }
    # the same engine behind its own 100 MB/s token bucket: a slow link, where zstd pays
    limited = {f"limited_{codec}": engine(codec, LIMIT) for codec in ("none", "zstd", "auto")}
    work = Path(tempfile.mkdtemp(prefix="ployz-bench-", dir="/dev/shm"))
    try:
        src, small = work / "mixed.bin", work / "mixed-small.bin"
        make_mixed(src, SIZE)
        make_mixed(small, LIMITED_SIZE)
        runs = compare(contenders, src, work)
        runs_limited = compare(limited, small, work)
    finally:
        shutil.rmtree(work)
    speed = {name: SIZE / run["seconds"] for name, run in runs.items()}
    slow = {name: LIMITED_SIZE / run["seconds"] for name, run in runs_limited.items()}
    print(json.dumps({
        "bytes": SIZE, "rounds": ROUNDS, "data": "mixed: 4 MiB blocks, random and text",
        "xxh3_GB_per_s": round(checksum_speed(), 2),
        "runs": runs,
        "limited_100MBps": {"bytes": LIMITED_SIZE, "runs": runs_limited},
        "ratios": {
            "limited_auto_vs_best_fixed": round(slow["limited_auto"] / max(
                slow["limited_none"], slow["limited_zstd"]), 3),
            "none_vs_mbuffer": round(speed["engine_none"] / speed["mbuffer"], 3),
            "none_vs_splice_unverified": round(speed["engine_none"]
                                               / speed["splice_unverified"], 3),
            "zstd_vs_zstd_nc": round(speed["engine_zstd"] / speed["zstd_nc"], 3),
            "auto_vs_zstd_nc": round(speed["engine_auto"] / speed["zstd_nc"], 3),
            "auto_vs_best_fixed": round(speed["engine_auto"] / max(
                speed["engine_none"], speed["engine_zstd"]), 3),
            "zstd_wire_vs_zstd_1": round(runs["engine_zstd"]["wire_bytes"]
                                         / runs["zstd_nc"]["wire_bytes"], 3),
        },
    }, indent=1))


if __name__ == "__main__":
    main()
