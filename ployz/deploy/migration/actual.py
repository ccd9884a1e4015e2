"""What a migration measures of the figures its estimate predicted (:class:`.estimate.Estimate`),
and the costs it leaves for the next estimates (:class:`~ployz.control.CutoverCosts`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ployz.control.link_fit import SMALL_SEND
from ployz.control.models import CutoverCosts
from ployz.deploy.migration.estimate import Estimate
from ployz.deploy.migration.ref import ServiceRef


@dataclass
class Actual:
    """Filled as the run goes: its sends and the write rates it sampled."""

    planned_initial_bytes: int
    initial_bytes: int = 0
    final_bytes: int = 0
    send_seconds: float = 0.0
    large_bytes: int = 0
    large_seconds: float = 0.0
    write_rates: list[float] = field(default_factory=list)

    def sent(self, kind: str, size: int, seconds: float) -> None:
        if kind == "full":
            self.initial_bytes += size
        elif kind == "final":
            self.final_bytes += size
        self.send_seconds += seconds
        if size >= SMALL_SEND:
            self.large_bytes += size
            self.large_seconds += seconds

    def wrote(self, bytes_per_s: float) -> None:
        self.write_rates.append(bytes_per_s)

    def measured(self, seconds: float, cutover: dict[str, float]) -> Estimate:
        link = self.large_bytes / self.large_seconds if self.large_seconds else None
        write = self.write_rates[-1] if self.write_rates else None
        return Estimate(self.initial_bytes, self.final_bytes, seconds,
                        cutover.get("total"), round(link, 1) if link else None,
                        round(write, 1) if write is not None else None)

    def costs(self, ref: ServiceRef, seconds: float, cutover: dict[str, float]) -> CutoverCosts:
        """The run's costs besides its sends: the stop, start and readiness, and the rest."""
        window = cutover.get("total", 0.0)
        in_window = cutover.get("final_send", 0.0)
        overhead = seconds - (self.send_seconds - in_window) - window
        return CutoverCosts(namespace=ref.namespace, service=ref.service,
                            stop_s=cutover.get("stop", 0.0), start_s=cutover.get("start", 0.0),
                            ready_s=cutover.get("ready", 0.0), overhead_s=max(0.0, overhead))
