"""Progress of a stream: bytes done and total, rate, ETA, for callbacks and progress bars.

The native data path only keeps counters; a meter samples them a few times a second. The
reported fraction never exceeds 100 %: a total that was only an estimate (``send_space``) and
turns out too small is raised to the bytes done, and 100 % is reported only once the stream is
complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None
    wire_bytes: int
    rate: float  # bytes of the stream per second, smoothed
    eta: float | None  # seconds; None while unknown
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        if self.finished:
            return 1.0
        if not self.total:
            return None
        return min(self.done / self.total, 0.999)


ProgressCallback = Callable[[Progress], None]


class ProgressMeter:
    """Turns successive counter samples into ``Progress`` values with an exponentially smoothed
    rate (so that one slow or fast sample does not swing the ETA)."""

    SMOOTHING = 0.3

    def __init__(self, total: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.clock = clock
        self.started = clock()
        self._last_time = self.started
        self._last_done: int | None = None
        self.rate = 0.0

    def sample(self, done: int, wire_bytes: int, finished: bool = False) -> Progress:
        now = self.clock()
        if self._last_done is not None and now > self._last_time:
            instant = max(done - self._last_done, 0) / (now - self._last_time)
            self.rate = instant if self.rate == 0 else (
                self.SMOOTHING * instant + (1 - self.SMOOTHING) * self.rate)
        self._last_time, self._last_done = now, done
        total = self.total
        if total is not None and (done > total or finished):
            total = done
        eta = None
        if finished:
            eta = 0.0
        elif total is not None and self.rate > 0:
            eta = (total - done) / self.rate
        return Progress(done, total, wire_bytes, self.rate, eta, finished)
