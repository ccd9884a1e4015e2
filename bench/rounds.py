"""The order contenders run in within a benchmark round, shared by every suite that compares
contenders side by side."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def rotated(contenders: tuple[T, ...], by: int) -> tuple[T, ...]:
    """Each round starts one contender later: whatever a run costs for its position (the first
    after a change of stream or of snapshot, after iperf3, which writes no sink) falls on each
    contender in turn rather than on the same one every round."""
    by %= len(contenders)
    return contenders[by:] + contenders[:by]
