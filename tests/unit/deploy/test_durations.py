"""Durations on the command line (``machine invite --ttl``)."""

from __future__ import annotations

import pytest

from ployz.deploy.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), (" 1.5h ", 5400),
    ("10M", 600),
])
def test_durations_people_write(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1w", "-5m", "0", "1 hour", "5m30s"])
def test_other_text_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"90s, 15m, 1h or 2d|positive"):
        parse_duration(text)
