"""Shared inputs of the micro-benchmarks: a mixed stream in tmpfs and its encoded frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.transfer.bench_loopback import make_mixed
from ployz._xfer import StreamSender

MiB = 1 << 20
STREAM = 16 * MiB  # big enough for the ring of frames to reach its steady state
FRAME = MiB
KEY = bytes(range(32))  # a session key: every frame is sealed, as on the wire


@pytest.fixture(scope="session")
def mixed_file() -> Iterator[Path]:
    """16 MiB of alternating random and text blocks, in tmpfs so the disk plays no part."""
    path = Path("/dev/shm") / f"ployz-micro-{os.getpid()}.bin"
    make_mixed(path, STREAM)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def devnull() -> Iterator[int]:
    fd = os.open("/dev/null", os.O_WRONLY)
    yield fd
    os.close(fd)


def encode(source: Path, codec: str) -> bytes:
    """The wire form of ``source`` as the native sender frames it (data frames and end frame)."""
    out = Path("/dev/shm") / f"ployz-micro-wire-{os.getpid()}-{codec}"
    try:
        with open(source, "rb") as src, open(out, "wb") as wire:
            kind, _errno, message = StreamSender(FRAME, codec).run(src.fileno(), wire.fileno(), 0,
                                                                   KEY)
            if kind:
                raise RuntimeError(f"encoding failed: {message}")
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def wire_none(mixed_file: Path) -> bytes:
    return encode(mixed_file, "none")


@pytest.fixture(scope="session")
def wire_zstd(mixed_file: Path) -> bytes:
    return encode(mixed_file, "zstd")
