"""How a migration's measured cutover costs join the ones the next estimates start from.

One migration's stop, start and readiness vary by 2x or more with what else the machines do
(a stop of 4.6 s in a run whose others took 1.3 to 2.3): the next estimate of a window taken
from that one run alone missed by half. The stored costs are therefore a running mean of the
recent migrations', each new one weighing :data:`LATEST_WEIGHT`.
"""

from __future__ import annotations

from ployz.control.models import CutoverCosts

LATEST_WEIGHT = 0.5
"""The share of the latest migration in the stored costs; the one before weighs a quarter."""


def fold_cutover(stored: CutoverCosts | None, measured: CutoverCosts) -> CutoverCosts:
    """``measured`` folded into ``stored`` (which may be another service's: the cluster's
    latest), under ``measured``'s service and time."""
    if stored is None:
        return measured

    def mean(latest: float, before: float) -> float:
        return round(LATEST_WEIGHT * latest + (1 - LATEST_WEIGHT) * before, 3)

    return measured.model_copy(update={
        "stop_s": mean(measured.stop_s, stored.stop_s),
        "start_s": mean(measured.start_s, stored.start_s),
        "ready_s": mean(measured.ready_s, stored.ready_s),
        "overhead_s": mean(measured.overhead_s, stored.overhead_s)})
