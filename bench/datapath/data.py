"""The three streams of the data-path suite, deterministic so every contender and every run
moves the same bytes: random (incompressible), text (word text, about 3:1 under zstd -1) and
mixed (alternating 4 MiB blocks of both, the loopback benchmark's stream)."""

from __future__ import annotations

import random
from pathlib import Path

from bench.transfer.bench_loopback import BLOCK, make_mixed, text_blocks

KINDS = ("random", "text", "mixed")


def make_stream(kind: str, path: Path, size: int) -> None:
    if kind == "mixed":
        make_mixed(path, size)
        return
    rng = random.Random(kind)
    texts = text_blocks(rng) if kind == "text" else []
    with open(path, "wb") as out:
        for index in range(size // BLOCK):
            out.write(texts[index % len(texts)] if texts else rng.randbytes(BLOCK))
