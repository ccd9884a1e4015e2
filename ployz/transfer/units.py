"""Byte-rate strings as users write them: ``100M``, ``1.5G``, ``64MiB/s``, ``500k``."""

from __future__ import annotations

import re

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?(?:/s)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_rate(text: str) -> float:
    """Bytes per second. Suffixes k/M/G/T are decimal (1000), Ki/Mi/Gi/Ti binary (1024)."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"invalid rate {text!r}: expected e.g. 100M, 1.5G or 64MiB/s")
    number, prefix, binary = match.groups()
    if binary and not prefix:
        raise ValueError(f"invalid rate {text!r}")
    value: float = float(number) * (1024 if binary else 1000) ** _POWERS[prefix.lower()]
    if value <= 0:
        raise ValueError(f"rate must be positive, got {text!r}")
    return value
