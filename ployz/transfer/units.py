"""Byte sizes and byte rates as people write and read them: ``1G``, ``512MiB``, ``100M``,
``64MiB/s``.

One grammar (a number, a k/M/G/T/P prefix, an optional ``i`` and ``B``, for rates an optional
``/s``) read in the two conventions operators bring from their tools:

- sizes are binary whatever the spelling, as in ``zfs set quota=1G``: a quota copied from ``zfs
  get`` means the same number of bytes;
- rates are decimal (``100M`` is 10^8 bytes per second), as link speeds are given, unless written
  with ``i`` (``64MiB/s``).

The formatters follow the same split: :func:`format_size` is short and binary (``1.5G``, the
tables), :func:`format_decimal_size` decimal with its unit (``1.5 GB``, the progress bar).
"""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)(/s)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE_UNITS = ("P", "T", "G", "M", "K")


def parse_size(value: int | str) -> int:
    """Bytes of ``value`` (a number of bytes, or a size with binary multiples K/M/G/T/P);
    raises ValueError saying the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("must be a number of bytes or a size such as '1G', not a boolean")
    if isinstance(value, int):
        size = value
    else:
        match = _QUANTITY.match(value)
        # "1Ki" is not a size: the binary mark goes with the B ("1KiB")
        if match is None or match[5] or (match[3] and not match[4]):
            raise ValueError(
                f"{value!r} is not a size: use bytes or a number with K, M, G, T or P "
                "(binary multiples, e.g. '512M', '1.5G', '2GiB')"
            )
        size = int(float(match[1]) * 1024 ** _POWERS[match[2].lower()])
    if size <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return size


def parse_rate(text: str) -> float:
    """Bytes per second. Suffixes k/M/G/T are decimal (1000), Ki/Mi/Gi/Ti binary (1024)."""
    match = _QUANTITY.match(text)
    if match is None or match[2].lower() == "p":
        raise ValueError(f"invalid rate {text!r}: expected e.g. 100M, 1.5G or 64MiB/s")
    number, prefix, binary = match[1], match[2].lower(), match[3]
    if binary and not prefix:
        raise ValueError(f"invalid rate {text!r}")
    value: float = float(number) * (1024 if binary else 1000) ** _POWERS[prefix]
    if value <= 0:
        raise ValueError(f"rate must be positive, got {text!r}")
    return value


def format_size(size: int | None) -> str:
    """Short binary form (``1.0G``); ``-`` for an unknown size."""
    if size is None:
        return "-"
    for unit in _SIZE_UNITS:
        multiple = 1024 ** _POWERS[unit.lower()]
        if size >= multiple:
            return f"{size / multiple:.1f}{unit}"
    return f"{size}B"


def format_decimal_size(value: float) -> str:
    """Bytes in decimal units, as link speeds are given: ``1.5 GB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
