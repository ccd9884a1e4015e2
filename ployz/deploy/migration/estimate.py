"""What a migration will cost, predicted from measurements, and the rule that ends pre-copy.

The inputs are measured, never assumed: the bytes each volume's first send carries
(``send_space`` of its stream), the rate the service writes at (growth of its volumes' write
counters over a short sample), the link between the two machines as earlier migrations measured
it (a send of B bytes took ``fixed_s + B / bytes_per_s``, :class:`~ployz.control.LinkRate`) and
what the service's
recent migrations spent stopping, starting, getting ready and on the rest of their runs
(:class:`~ployz.control.CutoverCosts`, a running mean; the cluster's, when this one never
moved). An input
not measured yet leaves the figures that need it unknown (None), never guessed.

Pre-copy is modelled as ``migrate apply`` runs it (:func:`next_round`): the full send, then
rounds that each send what was written during the one before, while each is smaller than the
last, until the final send would fit in the downtime budget (``--max-downtime``) with the stop
and start around it and another round would no longer shorten it markedly: the budget is a cap
on the downtime, not a target to fill. A service that writes faster than the link carries never
converges: the estimate says so (``converges`` False) and apply refuses before its fence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ployz.control.models import CutoverCosts, LinkRate
from ployz.control.plane import ControlPlane

MAX_PRECOPY_ROUNDS = 8
"""Incremental rounds after the full send at most; a service that needs more cannot converge."""
DEFAULT_BUDGET_SLACK_S = 5.0
"""The default downtime budget is the measured stop, start and ready plus this much for the
final send (or this much alone, before a migration of the cluster measured them)."""
WORTH_SHRINK = 0.5
"""A round that fits the budget is followed by another while the next is predicted to carry at
most this fraction of its bytes ..."""
WORTH_GAIN_S = 0.5
"""... and to take at least this much off the final send: less is not worth a round's
snapshots, and an idle service's empty deltas would go on shrinking to nothing."""


@dataclass(frozen=True)
class Estimate:
    """The figures ``migrate preview --json`` prints under ``estimate`` and apply's ``done``
    event carries beside ``actual`` (with the same fields, as measured)."""

    initial_bytes: int
    final_bytes: int | None
    seconds: float | None
    """The whole apply."""
    window_seconds: float | None
    """The cutover: the source's stop to the target's readiness."""
    link_bytes_per_s: float | None
    write_bytes_per_s: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Prediction:
    """An estimate and how it was reached."""

    estimate: Estimate
    rounds: int | None
    """Sends expected, the full and the final one included (None: the link is unknown)."""
    converges: bool | None
    budget_s: float
    basis: dict[str, Any]
    """Where each input came from, for the preview's reader."""
    probe_bytes_per_s: float | None = None
    """What the probe of the link measured, when one was taken: apply records it beside its
    full send's rate (:func:`~ployz.control.link_fit.fold_send`)."""

    def to_json(self) -> dict[str, Any]:
        return {**self.estimate.to_json(), "rounds": self.rounds, "converges": self.converges,
                "max_downtime_s": self.budget_s, "basis": self.basis}


def default_budget(costs: CutoverCosts | None, link: LinkRate | None = None) -> float:
    """The downtime budget when none is given: what the service's stop, start and readiness
    measured, and the link's fixed cost of a send, plus :data:`DEFAULT_BUDGET_SLACK_S` for the
    final send's bytes. Without the fixed cost, a link whose set-up alone takes longer than the
    slack could never fit even an empty final send, and pre-copy would refuse to converge."""
    fixed = sum(stop_and_start(costs))
    set_up = link.fixed_s if link is not None else 0.0
    return round(fixed + set_up + DEFAULT_BUDGET_SLACK_S, 3)


def stop_and_start(costs: CutoverCosts | None) -> tuple[float, float]:
    """The seconds around a final send: the stop before it, the start and readiness after it
    (none before a migration measured them)."""
    if costs is None:
        return 0.0, 0.0
    return costs.stop_s, costs.start_s + costs.ready_s


def costs_of(cp: ControlPlane, namespace: str, service: str) -> CutoverCosts | None:
    """The costs a migration of this service is estimated from: its own, else the cluster's."""
    return cp.cutover_costs(namespace, service) or cp.latest_cutover_costs()


def downtime_budget(max_downtime_s: float | None, costs: CutoverCosts | None,
                    link: LinkRate | None) -> float:
    """``max_downtime_s`` when the operator gave one, else :func:`default_budget` of these
    measurements. Each of pre-copy's verdicts takes the default from the same costs and link as
    the window it compares with it: while a parallel drain copies one service, the others'
    sends refit the shared link and their cutovers replace the latest costs, and a default
    fixed at plan time from older figures refused final sends that fit (the link's set-up had
    grown by more than the slack)."""
    return default_budget(costs, link) if max_downtime_s is None else max_downtime_s


def held_to(link: LinkRate | None, bwlimit: float) -> LinkRate | None:
    """``link`` as sends held to ``bwlimit`` bytes per second (0: none) find it."""
    if link is None or not bwlimit or link.bytes_per_s is None or link.bytes_per_s <= bwlimit:
        return link
    return link.model_copy(update={"bytes_per_s": bwlimit})


def send_seconds(link: LinkRate, size: float) -> float:
    assert link.bytes_per_s is not None
    return link.fixed_s + size / link.bytes_per_s


Verdict = Literal["another round", "fence", "cannot converge"]


def next_round(link: LinkRate, costs: CutoverCosts | None, write_bytes_per_s: float,
               delta: float, previous_delta: float | None, rounds_done: int,
               budget_s: float) -> Verdict:
    """After a pre-copy round: ``delta`` bytes were written since its snapshot (the previous
    round's delta ``previous_delta``, None after the full send). While the final send, with
    what the stop adds to it, does not fit the budget with the stop and start around it:
    another round while the deltas shrink and rounds are left, else pre-copy cannot converge.
    Once it fits: another round only while it is :func:`worth_a_round`, else fence. The
    budget's default leaves the final send's bytes seconds of slack, and fencing as soon as
    they fit made a service whose volumes' deltas add up cut over with several seconds of
    send that a round more would have moved while it still ran."""
    stop, start = stop_and_start(costs)
    final = delta + write_bytes_per_s * stop
    rounds_left = rounds_done <= MAX_PRECOPY_ROUNDS
    if stop + send_seconds(link, final) + start <= budget_s:
        if rounds_left and worth_a_round(link, write_bytes_per_s, delta):
            return "another round"
        return "fence"
    shrinking = previous_delta is None or delta < previous_delta
    if shrinking and rounds_left:
        return "another round"
    return "cannot converge"


def worth_a_round(link: LinkRate, write_bytes_per_s: float, delta: float) -> bool:
    """Whether sending ``delta`` while the service runs would leave the final send markedly
    smaller: what is written during that round's send is what the final send would then carry
    instead of ``delta``."""
    assert link.bytes_per_s is not None
    after = write_bytes_per_s * send_seconds(link, delta)
    return (after <= WORTH_SHRINK * delta
            and (delta - after) / link.bytes_per_s >= WORTH_GAIN_S)


def predict(initial_bytes: int, write_bytes_per_s: float | None, link: LinkRate | None,
            costs: CutoverCosts | None, budget_s: float | None = None,
            probe_bytes_per_s: float | None = None) -> Prediction:
    """The estimate of a migration moving ``initial_bytes`` first, from these measurements
    (``link`` as :func:`~ployz.control.link_fit.link_now` made it of the history and the
    probe, ``probe_bytes_per_s``, when one was taken)."""
    budget = downtime_budget(budget_s, costs, link)
    basis = {"link": _link_basis(link, probe_bytes_per_s), "cutover_costs": _when(costs),
             "write_rate": "sampled" if write_bytes_per_s is not None else "unknown"}
    rate = link.bytes_per_s if link is not None else None
    if link is None or rate is None or write_bytes_per_s is None:
        return Prediction(Estimate(initial_bytes, None, None, None, rate, write_bytes_per_s),
                          None, None, budget, basis, probe_bytes_per_s)
    elapsed = send_seconds(link, initial_bytes)
    delta = write_bytes_per_s * elapsed
    previous: float | None = None
    rounds = 1
    while (verdict := next_round(link, costs, write_bytes_per_s, delta, previous, rounds,
                                 budget)) == "another round":
        round_s = send_seconds(link, delta)
        elapsed += round_s
        previous, delta = delta, write_bytes_per_s * round_s
        rounds += 1
    stop, start = stop_and_start(costs)
    final = delta + write_bytes_per_s * stop
    # Without a migration's measured stop, start and readiness the window is unknown, not
    # the final send alone: a first migration's preview must not promise no downtime.
    window = None if costs is None else stop + send_seconds(link, final) + start
    seconds = None if costs is None or window is None else elapsed + window + costs.overhead_s
    return Prediction(
        Estimate(initial_bytes, round(final), _round(seconds), _round(window), rate,
                 write_bytes_per_s),
        rounds + 1, verdict == "fence", budget, basis, probe_bytes_per_s)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _link_basis(link: LinkRate | None, probe_bytes_per_s: float | None) -> str:
    if probe_bytes_per_s is None:
        return _when(link)
    probed = f"probed now at {probe_bytes_per_s / 1e6:.1f} MB/s"
    if link is None or link.fit.weight == 0:  # the probe alone (link_now): nothing folded
        return f"{probed}; no send measured yet"
    if link.probe_ratio is None:
        return f"{probed}; sends {_when(link)}"
    return (f"{probed}, of which sends carry {link.probe_ratio:.2f} "
            f"({_when(link)})")


def _when(measured: LinkRate | CutoverCosts | None) -> str:
    return "not measured yet" if measured is None else (
        f"measured {measured.measured_at.isoformat(timespec='seconds')}")
