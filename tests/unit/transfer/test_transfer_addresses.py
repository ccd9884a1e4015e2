"""``host:port`` addresses: both directions, IPv6 in brackets, and what is refused."""

from __future__ import annotations

import pytest

from ployz.transfer.addresses import format_address, parse_address


@pytest.mark.parametrize(
    ("text", "pair"),
    [("127.0.0.1:7070", ("127.0.0.1", 7070)), ("[fd00::2]:80", ("fd00::2", 80)),
     ("machine-a:0", ("machine-a", 0))],
)
def test_addresses_round_trip(text: str, pair: tuple[str, int]) -> None:
    assert parse_address(text) == pair
    assert format_address(*pair) == text


@pytest.mark.parametrize("text", ["host", ":80", "host:", "host:http", "host:70000", "host:-1"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(text)
