"""Writes the seed corpus of the fuzz harnesses, so that no binary inputs live in the repository
and the seeds always speak the protocol of the tree they run against.

Frame seeds are streams recorded from the real native sender (``StreamSender``) under the
harness key, for each mix of settings the receiver takes; handshake seeds are the control
messages the real ``protocol`` module encodes. Starting from real traffic, the fuzzer's first
mutations already sit behind the tag and the header checks instead of in front of them.

Run: ``python tests/fuzz/seeds.py frames|handshake DIR``.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wire import Config, native


def record_stream(config: Config, data: bytes, codec: str) -> bytes:
    """What the real sender puts on the wire for ``data``, end frame included."""
    source = os.memfd_create("ployz-fuzz-source", os.MFD_CLOEXEC)
    ours, theirs = socket.socketpair()
    chunks: list[bytes] = []

    def record() -> None:
        while chunk := theirs.recv(1 << 16):
            chunks.append(chunk)

    recorder = threading.Thread(target=record)
    recorder.start()
    try:
        os.write(source, data)
        os.lseek(source, 0, os.SEEK_SET)
        sender = native.StreamSender(config.frame_size, codec, 1, 2)
        kind, _errno, message = sender.run(source, ours.fileno(), 0, config.key,
                                           config.encrypt)
        if kind:
            raise RuntimeError(f"the sender failed recording a seed: {message}")
    finally:
        ours.close()
        recorder.join()
        theirs.close()
        os.close(source)
    return b"".join(chunks)


def frame_seeds() -> Iterator[bytes]:
    """Raw-mode inputs (real streams) and a few structured ones, over every setting."""
    import fuzz_frames

    rng = random.Random(2)
    for size in fuzz_frames.FRAME_SIZES:
        for encrypt in (False, True):
            for zstd in (False, True):
                for pipe in (False, True):
                    config = Config(size, zstd, 2, encrypt)
                    for length in sorted({0, size - 1, size, 3 * size + 5}):
                        length = min(max(length, 0), 40_000)
                        data = (bytes(length) if length % 2 else rng.randbytes(length))
                        stream = record_stream(config, data, "zstd" if zstd else "none")
                        yield fuzz_frames.config_bytes(config, False, pipe) + stream
                    yield fuzz_frames.config_bytes(config, True, pipe) + rng.randbytes(64)


def handshake_seeds() -> Iterator[bytes]:
    """One input of each of the handshake harness's modes, built from real messages."""
    import fuzz_handshake

    yield from fuzz_handshake.seeds()


def dns_seeds() -> Iterator[bytes]:
    """Queries as a resolver sends them, for names in and out of the zone."""
    import fuzz_dns

    yield from fuzz_dns.seeds()


def write(kind: str, directory: Path) -> int:
    """Writes the seeds of ``kind`` into ``directory`` (named by content, so rewriting them
    beside an evolved corpus adds nothing twice); returns how many there are."""
    directory.mkdir(parents=True, exist_ok=True)
    made = {"frames": frame_seeds, "handshake": handshake_seeds, "dns": dns_seeds}[kind]()
    count = 0
    for seed in made:
        (directory / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
        count += 1
    return count


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("frames", "handshake", "dns"):
        sys.exit("usage: seeds.py frames|handshake|dns DIR")
    print(f"{write(sys.argv[1], Path(sys.argv[2]))} seeds in {sys.argv[2]}")


if __name__ == "__main__":
    main()
