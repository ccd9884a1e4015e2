"""A progress bar for people at a terminal: one line rewritten in place with a carriage return.

``ployzctl transfer send`` draws it from the engine's progress samples on stderr, ``ployzctl
migrate apply`` from the migration's progress events on stdout. Scripts get neither: they ask
for ``--json``, and output that is not a terminal gets no bar (a log file would otherwise fill
with carriage returns).
"""

from __future__ import annotations

from typing import TextIO

from ployz.transfer.progress import Progress
from ployz.transfer.units import format_decimal_size

WIDTH = 30


def bar_line(fraction: float | None, done: float, rate: float, eta: float | None,
             label: str = "") -> str:
    """The bar's text, without the carriage return: ``label``, the bar, the percentage (never
    above 100, even when the total was an estimate that turned out too small), the bytes done,
    the rate and, when known, the seconds left."""
    if fraction is None:
        bar, percent = "?" * WIDTH, "  ?"
    else:
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * WIDTH)
        bar, percent = "#" * filled + "-" * (WIDTH - filled), f"{fraction * 100:3.0f}"
    remaining = "" if eta is None else f" eta {eta:5.0f}s"
    amounts = f"{format_decimal_size(done)} {format_decimal_size(rate)}/s"
    return f"{label}[{bar}] {percent}% {amounts}{remaining}"


class ProgressBar:
    """The bar on ``stream``. Each draw rewrites the line; :meth:`end` finishes it with a
    newline (only if anything was drawn), so that what is printed next starts on its own
    line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False

    def draw(self, fraction: float | None, done: float, rate: float, eta: float | None,
             label: str = "") -> None:
        # trailing blanks wipe what a longer previous line left behind
        self.stream.write("\r" + bar_line(fraction, done, rate, eta, label) + "   ")
        self.stream.flush()
        self.drawn = True

    def update(self, progress: Progress) -> None:
        """The transfer engine's progress callback."""
        self.draw(progress.fraction, progress.done, progress.rate, progress.eta)

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

