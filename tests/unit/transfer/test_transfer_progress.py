"""Progress arithmetic and retry backoff."""

from __future__ import annotations

import pytest

from ployz.transfer.progress import ProgressMeter
from ployz.transfer.sender import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_from_samples() -> None:
    clock = Clock()
    meter = ProgressMeter(1000, clock)
    meter.sample(0, 0)
    clock.now = 1.0
    progress = meter.sample(100, 100)
    assert progress.rate == 100 and progress.eta == pytest.approx(9.0)
    assert progress.fraction == pytest.approx(0.1)


def test_an_underestimated_total_never_shows_more_than_100_percent() -> None:
    clock = Clock()
    meter = ProgressMeter(1000, clock)
    meter.sample(0, 0)
    for step in range(1, 5):
        clock.now = step
        progress = meter.sample(step * 600, 0)
        assert progress.fraction is not None and progress.fraction < 1
        assert progress.total is not None and progress.total >= progress.done
        assert progress.eta is not None and progress.eta >= 0
    done = meter.sample(2400, 0, finished=True)
    assert done.fraction == 1.0 and done.eta == 0 and done.total == 2400


def test_unknown_total_has_no_fraction() -> None:
    assert ProgressMeter(None, Clock()).sample(5, 5).fraction is None


def test_backoff_grows_then_caps() -> None:
    policy = RetryPolicy(attempts=5, initial_backoff=0.5, max_backoff=3, multiplier=2)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]
