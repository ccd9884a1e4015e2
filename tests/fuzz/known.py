"""Findings of the fuzz harnesses that are reported but not fixed yet.

While one is open, every run of a harness would rediscover it within seconds and stop there, so
a harness passes over an exception that matches one of these (narrowly: the exception's type and
message and the function it came from) and goes on looking for others. Each has a regression test in
``test_fuzz_regressions.py`` marked ``xfail(strict=True)``: once the code is fixed that test
passes, the strict mark turns the pass into a failure, and the entry here and the mark go.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    name: str
    exception: type[BaseException]
    file: str  # where the exception is raised, as the end of a path
    function: str  # the function that raises it
    message: str  # text in the exception's message

    def matches(self, exc: BaseException) -> bool:
        if not isinstance(exc, self.exception) or exc.__traceback__ is None:
            return False
        innermost = traceback.extract_tb(exc.__traceback__)[-1]
        return (innermost.filename.endswith(self.file) and innermost.name == self.function
                and self.message in str(exc))


KNOWN: tuple[Known, ...] = ()


def known(exc: BaseException) -> Known | None:
    return next((k for k in KNOWN if k.matches(exc)), None)
