"""The transfer engine over loopback against the pipelines it replaces, same data, same run.

1 GiB of mixed data (4 MiB blocks, alternately random and word text) goes from a file in tmpfs
to a file in tmpfs:

- the authenticated stream (codec none; every frame carries an AES-256-GCM tag over its header
  and payload, the protocol's default) against ``mbuffer -m 128M`` to ``mbuffer -m 128M`` over
  TCP, which verifies nothing: what the tags cost against the plain copy users pipe instead;
- the encrypted stream (codec none, ``encrypt=True``: AES-256-GCM over every payload) against
  ``ssh -c aes128-gcm@openssh.com -o Compression=no`` to a private sshd running ``cat > FILE``,
  the encrypted channel syncoid and zfs-autobackup carry a stream over;
- codec zstd (and auto) against ``zstd -1 -T2 | nc | zstd -d``, whose wire bytes are those of
  ``zstd -1 -T2``;
- codec auto against none and zstd, all three behind the engine's 100 MB/s bandwidth limit
  (256 MiB), where compression pays unlike on loopback;
- two sends at once (256 MiB and its first 64 MiB) sharing one 100 MB/s limit against the
  same two each held to half of it: what passing a finished send's share on saves, and
  whether the two together keep to the limit (``shared_limit_rate_vs_limit``).

Contenders alternate within a round, and each round starts one contender later, to spread the
machine's noise and the cost of going first; the medians are reported as ratios (higher
throughput ratio is better) with the range of the per-round ratios, and CPU seconds per GB
(all processes and threads) of every contender. Prints one JSON object; ``make bench`` runs the
same measurement (``run``) and ``bench.report`` turns it into a table and targets.

    python -m bench.transfer.bench_loopback  # PLOYZ_BENCH_MIB, _LIMITED_MIB, _ROUNDS
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.datapath import sshd
from bench.rounds import rotated
from bench.splice import splice_all
from ployz._xfer import HEADER_SIZE, RateLimit, frame_checksum
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.protocol import DEFAULT_FRAME_SIZE
from ployz.transfer.receiver import Receiver
from ployz.transfer.sender import Sender

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


def run_pipeline(receive: str, send: str, port: int) -> str:
    """Starts the receiving shell pipeline, waits for its port, then runs the sending one;
    returns the sender's stderr (where ssh reports its wire bytes). mbuffer, nc and a debug-mode
    sshd accept exactly one connection, so readiness is checked with ``ss`` rather than by
    connecting."""
    receiver = subprocess.Popen(["bash", "-c", receive], start_new_session=True)
    deadline = time.monotonic() + 10
    while f":{port} " not in subprocess.run(["ss", "-ltnH"], capture_output=True,
                                            text=True).stdout:
        if time.monotonic() > deadline or receiver.poll() is not None:
            raise RuntimeError(f"receiver did not listen: {receive}")
        time.sleep(0.01)
    sent = subprocess.run(["bash", "-c", send], stderr=subprocess.PIPE, text=True)
    if sent.returncode != 0:  # the receiver would wait for a connection forever
        os.killpg(receiver.pid, signal.SIGKILL)
        receiver.wait()
        raise RuntimeError(f"sender failed ({sent.returncode}): {send}: {sent.stderr[-400:]}")
    if receiver.wait(timeout=600) != 0:
        raise RuntimeError(f"receiver failed: {receive}")
    return sent.stderr


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


def ssh_aes_gcm(work: Path) -> Callable[[Path, Path], int]:
    """``ssh -c aes128-gcm@openssh.com`` (compression off) piping the file into ``cat > DST`` on
    a one-connection sshd of its own (``bench.datapath.sshd``), as a replication tool's ssh
    transport does. sshd starts for each run, like the other receivers; the keys are made here,
    outside the measurement."""
    sshd.prepare(work, "127.0.0.1", free_port(), sshd.AES_GCM)

    def run(src: Path, dst: Path) -> int:
        port = free_port()
        config = sshd.prepare(work, "127.0.0.1", port, sshd.AES_GCM)
        client = sshd.client_command(work, "127.0.0.1", port, f"cat > {dst}", sshd.AES_GCM)
        # sshd -d logs every step to stderr; the client's exit status says whether it worked
        server = f"({sshd.server_command(config)}) 2>/dev/null"
        return sshd.wire_bytes(run_pipeline(server, f"{client} < {src}", port))

    return run


def splice_unverified(src: Path, dst: Path) -> int:
    """The design not taken for codec none: splice(2) file -> socket -> file, no framing and no
    checksums. Its distance from engine_none is the price of framing and authenticating every
    byte."""
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


def engine(codec: str, bwlimit: float = 0.0,
           encrypt: bool = False) -> Callable[[Path, Path], int]:
    """Sender and receiver in this process, one thread each: their CPU is this process's."""
    key = Ed25519PrivateKey.generate()

    def run(src: Path, dst: Path) -> int:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            receiver = Receiver(listener, FileSink(dst), key.public_key())
            thread = threading.Thread(target=receiver.serve)
            thread.start()
            result = Sender(FileSource(src), listener.getsockname(), key=key, codec=codec,
                            bwlimit=bwlimit, encrypt=encrypt).send()
            thread.join()
        if result.encrypted != encrypt:  # a figure of the wrong mode would pass unnoticed
            raise RuntimeError(f"the engine ran with encrypted={result.encrypted}")
        return result.wire_bytes

    return run


def engine_pair(shared: bool) -> Callable[[Path, Path], int]:
    """Two sends at once under one 100 MB/s limit: ``src`` and its first quarter. Shared, the
    two take from one token bucket (``RateLimit``, as an agent keeps the sends of one
    migration or drain), so the large one has the whole limit once the small one ended; not
    shared, each is held to half of it, as sends given a fixed share of a limit are."""
    key = Ed25519PrivateKey.generate()

    def run(src: Path, dst: Path) -> int:
        part = src.with_name(src.name + ".quarter")
        if not part.exists():
            with src.open("rb") as whole:
                part.write_bytes(whole.read(src.stat().st_size // 4))
        limit = RateLimit(LIMIT, 2.0 * (DEFAULT_FRAME_SIZE + HEADER_SIZE)) if shared else None
        wire = [0, 0]

        def send(index: int, source: Path, target: Path) -> None:
            with socket.create_server(("127.0.0.1", 0)) as listener:
                receiver = Receiver(listener, FileSink(target), key.public_key())
                thread = threading.Thread(target=receiver.serve)
                thread.start()
                wire[index] = Sender(FileSource(source), listener.getsockname(), key=key,
                                     codec="none", bwlimit=0.0 if shared else LIMIT / 2,
                                     shared_limit=limit).send().wire_bytes
                thread.join()

        other = dst.with_name(dst.name + ".quarter")
        threads = [threading.Thread(target=send, args=(0, src, dst)),
                   threading.Thread(target=send, args=(1, part, other))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if other.stat().st_size != part.stat().st_size:
            raise RuntimeError(f"the quarter arrived with {other.stat().st_size} bytes")
        other.unlink()
        return sum(wire)

    return run


def measure(contender: Callable[[Path, Path], int], src: Path, dst: Path) -> dict[str, float]:
    cpu, start = cpu_seconds(), time.perf_counter()
    wire = contender(src, dst)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if dst.stat().st_size != src.stat().st_size:
        raise RuntimeError(f"{contender} delivered {dst.stat().st_size} bytes")
    dst.unlink()
    return {"seconds": seconds, "cpu": cpu, "wire": wire}


def summarize(samples: list[dict[str, float]], size: int, label: str) -> dict[str, Any]:
    """Medians, with the range over the rounds: one run's noise on this small machine can
    exceed the difference between contenders, and the range says how far to trust a median."""
    gb = size / 1e9
    seconds = [s["seconds"] for s in samples]
    cpu = [s["cpu"] / gb for s in samples]
    return {"label": label, "seconds": round(statistics.median(seconds), 3),
            "GB_per_s": round(gb / statistics.median(seconds), 3),
            "GB_per_s_range": [round(gb / max(seconds), 3), round(gb / min(seconds), 3)],
            "cpu_s_per_GB": round(statistics.median(cpu), 3),
            "cpu_s_per_GB_range": [round(min(cpu), 3), round(max(cpu), 3)],
            "wire_bytes": int(statistics.median(s["wire"] for s in samples))}


Samples = dict[str, list[dict[str, float]]]


def compare(contenders: dict[str, Callable[[Path, Path], int]], src: Path,
            work: Path) -> Samples:
    """ROUNDS rounds, contenders interleaved within each round and rotated from round to round
    (memory touched first costs more, so no contender always goes first)."""
    samples: Samples = {name: [] for name in contenders}
    for round_index in range(ROUNDS):
        for name in rotated(tuple(contenders), round_index):
            samples[name].append(measure(contenders[name], src, work / f"out-{name}"))
    return samples


def fixed_seconds(contenders: dict[str, Callable[[Path, Path], int]],
                  work: Path) -> dict[str, float]:
    """Median seconds of three 4 KiB transfers: what each transfer pays whatever its size (for
    ssh a key exchange, a PAM session and a remote shell; for the engine its handshake), which
    says how much of a ratio at this stream size is set-up rather than throughput."""
    tiny = work / "tiny.bin"
    tiny.write_bytes(random.Random(3).randbytes(4096))
    return {name: round(statistics.median(
        measure(contender, tiny, work / f"out-{name}")["seconds"] for _ in range(3)), 3)
        for name, contender in contenders.items()}


@dataclass(frozen=True)
class Comparison:
    """Throughput of ``ours`` over that of the faster of ``baselines``, all from one
    ``compare`` (so round r of each ran moments apart); ``target`` is the ratio the engine must
    reach, checked by ``bench.report``."""
    what: str
    ours: str
    baselines: tuple[str, ...]
    target: float | None = None

    def measure(self, samples: Samples) -> dict[str, Any]:
        """The ratio of the median times and the range of the per-round ratios."""
        def median(name: str) -> float:
            return statistics.median(s["seconds"] for s in samples[name])

        per_round = [min(samples[b][r]["seconds"] for b in self.baselines)
                     / samples[self.ours][r]["seconds"] for r in range(len(samples[self.ours]))]
        return {**asdict(self),
                "ratio": round(min(median(b) for b in self.baselines) / median(self.ours), 3),
                "range": [round(min(per_round), 3), round(max(per_round), 3)]}


LABELS = {
    "mbuffer": "mbuffer -m 128M to mbuffer -m 128M",
    "engine_none": "engine, codec none: the authenticated stream (AES-256-GCM tag per frame)",
    "splice_unverified": "splice(2) file -> socket -> file, no framing, checksums or tags",
    "ssh_aes128_gcm": "ssh -c aes128-gcm@openssh.com -o Compression=no to a local sshd",
    "engine_none_encrypt": "engine, codec none, encrypted (AES-256-GCM payloads)",
    "zstd_nc": "zstd -1 -T2 | nc | zstd -d",
    "engine_zstd": "engine, codec zstd (authenticated)",
    "engine_auto": "engine, codec auto (authenticated)",
    **{f"limited_{codec}": f"engine, codec {codec}, behind its own 100 MB/s limit"
       for codec in ("none", "zstd", "auto")},
    "limited_pair_shared": "two sends (a stream and its first quarter), codec none, sharing "
                           "one 100 MB/s limit",
    "limited_pair_halves": "the same two sends, each behind its own half of the limit",
}

COMPARISONS = {
    "authenticated_vs_mbuffer": Comparison(
        "authenticated stream (codec none) vs mbuffer -m 128M to mbuffer", "engine_none",
        ("mbuffer",), 1.0),
    "encrypted_vs_ssh": Comparison(
        "encrypted stream (codec none, encrypt) vs ssh -c aes128-gcm@openssh.com, no "
        "compression", "engine_none_encrypt", ("ssh_aes128_gcm",), 2.0),
    "encrypted_vs_authenticated": Comparison(
        "encrypted stream vs the authenticated stream (the price of encrypting)",
        "engine_none_encrypt", ("engine_none",)),
    "authenticated_vs_splice_unverified": Comparison(
        "authenticated stream vs splice(2) without framing, checksums or tags", "engine_none",
        ("splice_unverified",)),
    "zstd_vs_zstd_nc": Comparison("codec zstd vs zstd -1 -T2 | nc | zstd -d", "engine_zstd",
                                  ("zstd_nc",)),
    "auto_vs_zstd_nc": Comparison("codec auto vs zstd -1 -T2 | nc | zstd -d", "engine_auto",
                                  ("zstd_nc",)),
    "auto_vs_best_fixed": Comparison("codec auto vs the better fixed codec, loopback",
                                     "engine_auto", ("engine_none", "engine_zstd")),
    "limited_auto_vs_best_fixed": Comparison(
        "codec auto vs the better fixed codec, 100 MB/s limit", "limited_auto",
        ("limited_none", "limited_zstd")),
    "shared_limit_vs_halves": Comparison(
        "two sends sharing a 100 MB/s limit vs each held to half of it (the quarter ends "
        "first and leaves its share)", "limited_pair_shared", ("limited_pair_halves",), 1.3),
}


def checksum_speed() -> float:
    """GB/s of the per-frame checksum (xxh3-64) on 1 MiB frames: the price of reading every
    byte once, which is why codec none copies through user space instead of splicing."""
    frame = random.Random(2).randbytes(MiB)
    start = time.perf_counter()
    for offset in range(512):
        frame_checksum(frame, offset)
    return 512 * MiB / (time.perf_counter() - start) / 1e9


def run() -> dict[str, Any]:
    """The whole measurement, as the JSON object ``main`` prints."""
    for tool in ("mbuffer", "nc", "zstd", "ss", "ssh", sshd.SSHD):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is missing: run scripts/setup-system.sh")
    work = Path(tempfile.mkdtemp(prefix="ployz-bench-", dir="/dev/shm"))
    try:
        contenders: dict[str, Callable[[Path, Path], int]] = {
            "mbuffer": mbuffer, "engine_none": engine("none"),
            "splice_unverified": splice_unverified,
            "ssh_aes128_gcm": ssh_aes_gcm(work / "sshd"),
            "engine_none_encrypt": engine("none", encrypt=True),
            "zstd_nc": zstd_nc, "engine_zstd": engine("zstd"), "engine_auto": engine("auto"),
        }
        # the same engine behind its own 100 MB/s token bucket: a slow link, where zstd pays
        limited = {f"limited_{codec}": engine(codec, LIMIT) for codec in ("none", "zstd", "auto")}
        limited |= {"limited_pair_shared": engine_pair(True),
                    "limited_pair_halves": engine_pair(False)}
        src, small = work / "mixed.bin", work / "mixed-small.bin"
        make_mixed(src, SIZE)
        make_mixed(small, LIMITED_SIZE)
        samples = compare(contenders, src, work)
        samples_limited = compare(limited, small, work)
        fixed = fixed_seconds(contenders, work)
    finally:
        shutil.rmtree(work)
    runs = {name: summarize(s, SIZE, LABELS[name]) for name, s in samples.items()}
    runs_limited = {name: summarize(s, LIMITED_SIZE, LABELS[name])
                    for name, s in samples_limited.items()}
    every = {**samples, **samples_limited}
    return {
        "bytes": SIZE, "rounds": ROUNDS, "data": "mixed: 4 MiB blocks, random and text",
        "xxh3_GB_per_s": round(checksum_speed(), 2),
        "runs": runs,
        "fixed_seconds": fixed,
        "limited_100MBps": {"bytes": LIMITED_SIZE, "runs": runs_limited},
        # the pair carries a stream and its quarter: together at most the limit they share
        "shared_limit_rate_vs_limit": round(
            1.25 * LIMITED_SIZE / runs_limited["limited_pair_shared"]["seconds"] / LIMIT, 3),
        "ratios": {key: c.measure(every) for key, c in COMPARISONS.items()},
        "zstd_wire_vs_zstd_1": round(runs["engine_zstd"]["wire_bytes"]
                                     / runs["zstd_nc"]["wire_bytes"], 3),
    }


def main() -> None:
    print(json.dumps(run(), indent=1))


if __name__ == "__main__":
    main()
