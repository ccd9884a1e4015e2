"""Byte sizes as operators write them (``"1G"``, ``"512MiB"``, ``1073741824``) and read them.

Multiples are binary, as in ``zfs set quota=1G``: an operator copying a quota from ``zfs get``
gets the same number of bytes.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes of ``value``; raises ValueError saying the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("must be a number of bytes or a size such as '1G', not a boolean")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a size: use bytes or a number with K, M, G, T or P "
                "(binary multiples, e.g. '512M', '1.5G', '2GiB')"
            )
        number, unit = match.groups()
        size = int(float(number) * _UNITS[unit.upper()])
    if size <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return size


def format_size(size: int | None) -> str:
    """Short human form (``1.0G``); ``-`` for an unknown size."""
    if size is None:
        return "-"
    for unit in ("P", "T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.1f}{unit}"
    return f"{size}B"
