"""Sizes and rates: the binary reading of sizes, the decimal one of rates, and their short forms."""

from __future__ import annotations

import pytest

from ployz.transfer.units import format_decimal_size, format_size, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("1G", 1 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("10 kb", 10240),
     ("4096", 4096), (4096, 4096), ("2T", 2 << 40), ("1P", 1 << 50)],
)
def test_sizes_are_binary_multiples(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "1X", "-1G", "0", True, "1Ki", "1G/s"])
def test_bad_sizes_are_refused(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(("text", "value"), [
    ("100", 100), ("100M", 100e6), ("1.5G", 1.5e9), ("64MiB/s", 64 * 2**20), ("500k", 5e5),
    ("2 GB", 2e9), ("1KiB", 1024),
])
def test_rates_are_decimal_unless_binary(text: str, value: float) -> None:
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["", "fast", "-1M", "0", "1X", "Mi", "1iB", "1P"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_format_size_is_short_and_marks_unknown() -> None:
    assert [format_size(s) for s in (None, 512, 1536, 1 << 30)] == ["-", "512B", "1.5K", "1.0G"]


def test_format_decimal_size_counts_in_thousands() -> None:
    assert [format_decimal_size(v) for v in (999, 1500, 2.5e9, 3e12)] == [
        "999 B", "1.5 kB", "2.5 GB", "3.0 TB"]
