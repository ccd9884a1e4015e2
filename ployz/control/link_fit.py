"""A link's send model, ``seconds = fixed_s + bytes / bytes_per_s``, fitted to the sends made
over it: a least-squares line through (bytes, seconds) of recent sends, each older send
weighing :data:`DECAY` of the one after it.

Why a fit: every migration makes a large send and a much smaller final one, and both carry the
same fixed cost (the receiver's set-up, the handshake, the commit). Folding each send's
bytes/seconds into one average rate makes the small send drag the rate down (a 7 MB send that
spends 0.8 s of its 1.7 s setting up looks like a link half as fast), and the next 300 MB
estimate twice too slow. Two sends of different sizes separate the two costs.

The fit follows the link as past sends found it. What it carries now, under the load of now, a
probe measures (:func:`link_now`); the large sends also record what share of their probe's rate
a ZFS send achieves, which turns the next probe into the next send's rate.
"""

from __future__ import annotations

from ployz.control.models import LinkRate, SendFit

SMALL_SEND = 1 << 20
"""A link's rate is known once a send at least this large was measured; smaller ones alone
measure only its fixed cost."""
DECAY = 0.5
"""The weight of the earlier sends, all together, against the newest."""
PROBE_RATIO_WEIGHT = 0.5
"""The share of the latest probed send in the stored ratio of sends to probes."""
DISTINCT_SIZES = 0.25
"""The sizes' spread (standard deviation over mean) from which the line's slope is trusted;
below it (sends of one size), the fixed cost measured before stays and the rate is fitted
beyond it."""


def fold_send(current: LinkRate | None, source: str, target: str, size: int,
              seconds: float, probe_bytes_per_s: float | None = None) -> LinkRate:
    """``current`` with one more send of ``size`` bytes in ``seconds``; with
    ``probe_bytes_per_s``, what a probe of the link measured just before it, also the ratio of
    the two (:func:`link_now`)."""
    fit = _add(current.fit if current is not None else SendFit(), float(size), seconds)
    large = size >= SMALL_SEND or (current is not None and current.bytes_per_s is not None)
    fixed = current.fixed_s if current is not None else 0.0
    rate: float | None = None
    if large:
        rate, fixed = _line(fit, fixed)
    else:
        fixed = fit.mean_s
    ratio = current.probe_ratio if current is not None else None
    if probe_bytes_per_s is not None and size >= SMALL_SEND:
        # beyond the fixed cost, as the estimate adds it back; never more than half of it
        achieved = size / max(seconds - fixed, seconds / 2) / probe_bytes_per_s
        ratio = achieved if ratio is None else (
            PROBE_RATIO_WEIGHT * achieved + (1 - PROBE_RATIO_WEIGHT) * ratio)
    return LinkRate(source=source, target=target, bytes_per_s=rate, fixed_s=fixed,
                    sends=(current.sends if current is not None else 0) + 1, fit=fit,
                    probe_ratio=ratio)


def link_now(history: LinkRate | None, source: str, target: str,
             probe_bytes_per_s: float | None) -> LinkRate | None:
    """The link an estimate made now starts from. The history's rate is what sends carried
    under the load of their time; a probe measures the load of now, but it neither reads nor
    writes a pool, so a ZFS send carries only a share of it: the probe's rate times the share
    the recent probed migrations measured (``probe_ratio``), with the history's fixed cost. A
    link never probed before its sends keeps its history; one without any history is taken
    at the probe's rate."""
    if probe_bytes_per_s is None:
        return history
    if history is None:
        return LinkRate(source=source, target=target, bytes_per_s=probe_bytes_per_s,
                        fixed_s=0.0, sends=1)
    if history.probe_ratio is not None:
        return history.model_copy(
            update={"bytes_per_s": probe_bytes_per_s * history.probe_ratio})
    if history.bytes_per_s is None:
        return history.model_copy(update={"bytes_per_s": probe_bytes_per_s})
    return history


def _add(fit: SendFit, x: float, y: float) -> SendFit:
    """Welford's update with the earlier weights scaled by :data:`DECAY` first (scaling every
    weight leaves the means and scales the spreads)."""
    weight = fit.weight * DECAY + 1.0
    dx = x - fit.mean_bytes
    mean_bytes = fit.mean_bytes + dx / weight
    mean_s = fit.mean_s + (y - fit.mean_s) / weight
    return SendFit(weight=weight, mean_bytes=mean_bytes, mean_s=mean_s,
                   spread_bytes=fit.spread_bytes * DECAY + dx * (x - mean_bytes),
                   co_spread=fit.co_spread * DECAY + dx * (y - mean_s))


def _line(fit: SendFit, fixed_before: float) -> tuple[float, float]:
    """(bytes_per_s, fixed_s). The least-squares line when the sizes differ enough and it
    makes sense (time grows with size, no negative set-up); otherwise the rate beyond the fixed
    cost known before, which is at most half of the sends' time."""
    spread = (fit.spread_bytes / fit.weight) ** 0.5 if fit.spread_bytes > 0 else 0.0
    if spread >= DISTINCT_SIZES * fit.mean_bytes and fit.co_spread > 0:
        per_byte = fit.co_spread / fit.spread_bytes
        fixed = fit.mean_s - per_byte * fit.mean_bytes
        if fixed >= 0:
            return 1.0 / per_byte, fixed
    fixed = min(fixed_before, fit.mean_s / 2)
    return fit.mean_bytes / (fit.mean_s - fixed), fixed
