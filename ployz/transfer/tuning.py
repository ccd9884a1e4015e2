"""Tuning the engine to one link: short probes of the link (through a real receiver) and of
the local CPU, and the settings they recommend.

The rule is codec auto's, applied once with measured numbers: compressing moves
``min(threads x zstd speed, link / ratio)`` stream bytes per second, sending raw moves
``min(link, framing speed)``; compress only for a clear gain (25 %), as the native data path
does frame by frame. The ratio comes from a sample of the operator's data (``sample``), or from
a synthetic half-random, half-text stream when none is given.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz._xfer import KEY_SIZE, MAX_WORKERS, StreamSender
from ployz.transfer.files import FileSource
from ployz.transfer.protocol import DEFAULT_FRAME_SIZE, MIN_FRAME_SIZE
from ployz.transfer.sender import Sender

GAIN = 1.25  # the native data path's PZ_AUTO_GAIN
LEVELS = (1, 3)
SAMPLE_BYTES = 8 << 20
PROBE_BYTES = 64 << 20
PROBE_SECONDS = 2.0  # a rate-limited probe is cut to about this long
MIN_SOCKET_BUFFER, MAX_SOCKET_BUFFER = 1 << 20, 64 << 20


@dataclass(frozen=True)
class CpuProbe:
    level: int
    MB_per_s_per_thread: float  # compressing the sample, one thread, wall clock
    ratio: float  # compressed / raw bytes on the sample


@dataclass(frozen=True)
class Measurements:
    link_MB_per_s: float
    rtt_ms: float
    framing_MB_per_s: float  # codec none through the native framer, one stream
    zstd: tuple[CpuProbe, ...]
    cores: int


@dataclass(frozen=True)
class Recommendation:
    codec: str
    level: int
    threads: int
    frame_size: int
    socket_buffer: int
    expected_MB_per_s: float


@contextmanager
def memory_file(data: bytes) -> Iterator[tuple[int, str]]:
    """An anonymous in-memory file: its descriptor and a path other code can open."""
    fd = os.memfd_create("ployz-tune")
    try:
        os.write(fd, data)
        yield fd, f"/proc/{os.getpid()}/fd/{fd}"
    finally:
        os.close(fd)


def synthetic_sample(size: int = SAMPLE_BYTES) -> bytes:
    """Half random, half word text in 1 MiB blocks: a stand-in for data of unknown kind."""
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
             for _ in range(512)]
    blocks = []
    for index in range(size >> 20):
        if index % 2:
            blocks.append(b" ".join(rng.choices(words, k=1 << 18))[: 1 << 20])
        else:
            blocks.append(rng.randbytes(1 << 20))
    return b"".join(blocks)


def encode_rate(sample_fd: int, size: int, codec: str, level: int) -> tuple[float, float]:
    """MB/s and wire/raw ratio of the native framer on the sample, one thread, into
    /dev/null (no network): what one core can feed a link."""
    null = os.open("/dev/null", os.O_WRONLY)
    try:
        sender = StreamSender(DEFAULT_FRAME_SIZE, codec, level, 1 if codec == "zstd" else 0)
        os.lseek(sample_fd, 0, os.SEEK_SET)
        start = time.perf_counter()
        # frames are sealed as on the wire, so the figure includes what their tags cost
        kind, _errno, message = sender.run(sample_fd, null, 0, os.urandom(KEY_SIZE))
        seconds = time.perf_counter() - start
    finally:
        os.close(null)
    if kind:
        raise RuntimeError(f"CPU probe failed: {message}")
    return size / seconds / 1e6, sender.wire_bytes / size


def probe_cpu(sample: bytes, levels: tuple[int, ...] = LEVELS) -> tuple[float, list[CpuProbe]]:
    with memory_file(sample) as (fd, _path):
        framing, _ = encode_rate(fd, len(sample), "none", 0)
        probes = [CpuProbe(level, *encode_rate(fd, len(sample), "zstd", level))
                  for level in levels]
    return framing, probes


def probe_rtt(address: tuple[str, int]) -> float:
    """Milliseconds for a TCP connect. The receiver sees one connection close before its
    handshake and goes back to accepting."""
    start = time.perf_counter()
    with socket.create_connection(address, timeout=10):
        pass
    return (time.perf_counter() - start) * 1e3


def probe_link(address: tuple[str, int], key: Ed25519PrivateKey, bwlimit: float = 0.0,
               size: int = PROBE_BYTES) -> float:
    """MB/s of incompressible bytes through the engine (codec none) to the receiver at
    ``address``, which must serve a file transfer. With ``bwlimit`` the probe is shortened to
    about ``PROBE_SECONDS`` and uses the smallest frames, so that a probe of a few frames still
    measures the limit's pace (the token bucket starts empty and lets one frame out at a
    time)."""
    frame = DEFAULT_FRAME_SIZE
    if bwlimit:
        frame = MIN_FRAME_SIZE
        size = max(min(size, int(bwlimit * PROBE_SECONDS)), 4 * frame)
    with memory_file(os.urandom(size)) as (_fd, path):
        result = Sender(FileSource(path), address, key=key, codec="none", frame_size=frame,
                        bwlimit=bwlimit).send()
    return result.bytes / result.seconds / 1e6


def recommend(m: Measurements, level: int | None = None) -> Recommendation:
    """The codec, level, threads and buffers for the measured link and CPU."""
    threads = max(1, min(m.cores - 1, MAX_WORKERS))  # one core for reading, sending, TCP
    raw = min(m.link_MB_per_s, m.framing_MB_per_s)
    candidates = [p for p in m.zstd if level is None or p.level == level]
    best = max(candidates, key=lambda p: min(p.MB_per_s_per_thread * threads,
                                             m.link_MB_per_s / max(p.ratio, 1e-3)))
    compressed = min(best.MB_per_s_per_thread * threads, m.link_MB_per_s / max(best.ratio, 1e-3))
    codec, expected = ("zstd", compressed) if compressed > GAIN * raw else ("none", raw)
    buffer = int(m.link_MB_per_s * 1e6 * m.rtt_ms / 1e3 * 2)  # twice bandwidth x delay
    return Recommendation(codec, best.level, threads, DEFAULT_FRAME_SIZE,
                          min(max(buffer, MIN_SOCKET_BUFFER), MAX_SOCKET_BUFFER),
                          round(expected, 1))


def tune(address: tuple[str, int], key: Ed25519PrivateKey, *, sample: bytes | None = None,
         bwlimit: float = 0.0, level: int | None = None) -> dict[str, dict[str, Any]]:
    """Runs the probes and returns the measurements and the recommendation."""
    framing, probes = probe_cpu(sample or synthetic_sample(),
                                (level,) if level is not None else LEVELS)
    rtt = probe_rtt(address)
    link = probe_link(address, key, bwlimit)
    measured = Measurements(round(link, 3), round(rtt, 3), round(framing, 1), tuple(probes),
                            os.cpu_count() or 1)
    return {"measured": asdict(measured), "recommended": asdict(recommend(measured, level))}
