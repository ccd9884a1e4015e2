"""Test data for the transfer tests: random, text and mixed bytes, reproducible by seed."""

from __future__ import annotations

import os
import random
from pathlib import Path

from ployz._xfer import frame_checksum
from tests.host.transfer.relay import chain_checksum

WORDS = (
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "they", "you", "were", "her", "she", "there", "one", "all", "we", "their", "been", "has",
    "will", "snapshot", "dataset", "pool", "volume", "machine", "overlay", "container", "receive",
    "stream", "frame",
)


def make_data(kind: str, size: int, seed: int = 0) -> bytes:
    """random (incompressible), text (compressible words), or mixed (half each, interleaved in
    blocks so that a stream alternates between the two)."""
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "text":
        out = bytearray()
        while len(out) < size:
            out += " ".join(rng.choice(WORDS) for _ in range(12)).encode() + b"\n"
        return bytes(out[:size])
    block = 256 * 1024
    out = bytearray()
    while len(out) < size:
        out += make_data("random" if (len(out) // block) % 2 == 0 else "text", block,
                         rng.randrange(1 << 30))
    return bytes(out[:size])


def write_data(path: Path, kind: str, size: int, seed: int = 0, block: int = 16 << 20) -> Path:
    """A large file of ``make_data`` blocks, each of its own seed, written without holding the
    whole file in memory."""
    with path.open("wb") as out:
        for n, at in enumerate(range(0, size, block)):
            out.write(make_data(kind, min(block, size - at), seed * 1_000_003 + n))
    return path


def same_bytes(a: Path, b: Path) -> bool:
    return os.path.getsize(a) == os.path.getsize(b) and a.read_bytes() == b.read_bytes()


def whole_stream_checksum(data: bytes, frame: int) -> str:
    """The checksum the receiver reports: xxh3 over the frames' seeded checksums."""
    sums = (frame_checksum(data[at:at + frame], at) for at in range(0, len(data), frame))
    return f"{chain_checksum(sums):016x}"


def assert_only_source_bytes(src: Path, dst: Path) -> None:
    """What a receiver holds of ``src`` at ``dst`` is the source's bytes and nothing else: the
    committed file is absent or identical, and the partial file is a prefix of the source."""
    data = src.read_bytes()
    if dst.exists():
        assert dst.read_bytes() == data, "the committed file differs from the source"
    partial = dst.with_name(dst.name + ".partial")
    if partial.exists():
        assert data.startswith(partial.read_bytes()), "the partial file is not the source's"
