"""The native data path's per-frame work, one stage at a time: the checksum every frame carries,
encoding a stream into frames (read, checksum, optional zstd, header, writev), and decoding them
(header checks, optional zstd, checksum, write). Throughput per run is 16 MiB / mean time."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from bench.micro.conftest import FRAME, KEY, STREAM, MiB
from ployz._xfer import StreamReceiver, StreamSender, frame_checksum


@pytest.mark.benchmark(group="checksum")
def test_checksum_xxh3_1mib(benchmark) -> None:
    frame = os.urandom(MiB)
    benchmark.extra_info["bytes"] = len(frame)
    benchmark(frame_checksum, frame, 0)


@pytest.mark.benchmark(group="checksum")
def test_copy_1mib(benchmark) -> None:
    """The checksum's baseline: one copy of the same frame, the other per-byte cost of a raw
    frame on each side (its tee read into memory). Natively the checksum costs about half a copy;
    under the ZFS VM's emulated CPU about two, which is where the engine's time goes there."""
    frame = os.urandom(MiB)
    copy = bytearray(MiB)

    def run() -> None:
        copy[:] = frame

    benchmark.extra_info["bytes"] = len(frame)
    benchmark(run)


@pytest.mark.benchmark(group="frame-encode")
@pytest.mark.parametrize("codec", ["none", "zstd", "auto"])
def test_encode_16mib(benchmark, mixed_file: Path, devnull: int, codec: str) -> None:
    """One sender per round, as each transfer makes one. With codec auto and no link
    measurement yet, this is the cost of the per-frame choice on top of sending raw."""
    with open(mixed_file, "rb") as src:
        def run() -> None:
            os.lseek(src.fileno(), 0, os.SEEK_SET)
            kind, _errno, message = StreamSender(FRAME, codec).run(src.fileno(), devnull, 0, KEY)
            assert kind == 0, message

        benchmark.extra_info["bytes"] = STREAM
        benchmark(run)


def decode(wire: bytes, allow_zstd: bool, devnull: int) -> None:
    """Feeds ``wire`` through a socket pair into a fresh receiver that writes to /dev/null."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        feeder = threading.Thread(target=theirs.sendall, args=(wire,))
        feeder.start()
        receiver = StreamReceiver(FRAME, allow_zstd)
        kind, _errno, message = receiver.run(ours.fileno(), devnull, KEY)
        feeder.join()
    assert kind == 0 and receiver.ended, message


@pytest.mark.benchmark(group="frame-decode")
def test_decode_16mib_none(benchmark, wire_none: bytes, devnull: int) -> None:
    benchmark.extra_info["bytes"] = STREAM
    benchmark(decode, wire_none, False, devnull)


@pytest.mark.benchmark(group="frame-decode")
def test_decode_16mib_zstd(benchmark, wire_zstd: bytes, devnull: int) -> None:
    benchmark.extra_info["bytes"] = STREAM
    benchmark(decode, wire_zstd, True, devnull)
