"""The link's send model: the line through recent sends separates the fixed cost of a send from
the rate beyond it, so a migration's small final send no longer makes the link look slow."""

from __future__ import annotations

import pytest

from ployz.control.link_fit import fold_send, link_now
from ployz.control.models import LinkRate

MIB = 1 << 20


def folded(*sends: tuple[int, float]) -> LinkRate:
    link: LinkRate | None = None
    for size, seconds in sends:
        link = fold_send(link, "machine-a", "machine-b", size, seconds)
    assert link is not None
    return link


def test_sends_on_one_line_give_its_rate_and_fixed_cost() -> None:
    rate, fixed = 8e6, 0.7
    link = folded(*((size, fixed + size / rate) for size in (46 * MIB, 7 * MIB, 286 * MIB,
                                                             14 * MIB)))
    assert link.bytes_per_s == pytest.approx(rate)
    assert link.fixed_s == pytest.approx(fixed)
    assert link.sends == 4


def test_a_small_final_send_does_not_drag_the_rate_down() -> None:
    """A migration's full send and its final send, each paying 0.8 s of set-up on a link of
    7 MB/s: the 300 MB send that follows is predicted at the link's pace."""
    link = folded(*((size, 0.8 + size / 7e6) for size in (46_000_000, 7_000_000)))
    assert link.bytes_per_s == pytest.approx(7e6)
    predicted = link.fixed_s + 300e6 / link.bytes_per_s
    assert predicted == pytest.approx(0.8 + 300e6 / 7e6)


def test_small_sends_alone_measure_only_the_fixed_cost() -> None:
    link = folded((4096, 0.8), (8192, 0.6))
    assert link.bytes_per_s is None
    assert link.fixed_s == pytest.approx((0.5 * 0.8 + 0.6) / 1.5)


def test_sends_of_one_size_keep_the_fixed_cost_measured_before() -> None:
    """Sends of one size cannot separate the costs: once they are all the fit remembers, the
    fixed cost stays what sends of different sizes measured, and the rate follows the recent
    sends' pace beyond it (the link got twice as fast)."""
    before = folded((4096, 0.5), (100 * MIB, 10.5))
    assert before.fixed_s == pytest.approx(0.5, abs=1e-3)
    link = folded((4096, 0.5), (100 * MIB, 10.5), *[(100 * MIB, 5.5)] * 4)
    assert link.fixed_s == pytest.approx(before.fixed_s, abs=1e-3)
    assert link.bytes_per_s == pytest.approx(100 * MIB / 5.0, rel=0.05)


def test_a_line_with_a_negative_set_up_falls_back_to_the_mean_rate() -> None:
    """Noise can tilt two sends' line past the origin: no fixed cost is better than a
    negative one, and the rate is their bytes over their time."""
    link = folded((10 * MIB, 0.1), (100 * MIB, 10.0))
    assert link.fixed_s == 0.0
    mean_bytes = (0.5 * 10 * MIB + 100 * MIB) / 1.5
    mean_s = (0.5 * 0.1 + 10.0) / 1.5
    assert link.bytes_per_s == pytest.approx(mean_bytes / mean_s)


def test_a_link_recorded_before_the_fit_existed_still_reads_and_folds() -> None:
    old = LinkRate.model_validate({"source": "machine-a", "target": "machine-b",
                                   "bytes_per_s": 5e6, "fixed_s": 0.3, "sends": 4})
    link = fold_send(old, "machine-a", "machine-b", 50 * MIB, 10.0)
    assert link.sends == 5 and link.bytes_per_s is not None and link.bytes_per_s > 0


def test_probed_sends_record_what_share_of_the_probe_a_send_carries() -> None:
    """A full send of 100 MiB at 5 MiB/s beyond its 1 s set-up, after a probe of 10 MiB/s:
    sends carry half of a probe; the next, at 0.3, weighs half in the stored share."""
    first = fold_send(None, "machine-a", "machine-b", 100 * MIB, 21.0, 10 * MIB)
    assert first.probe_ratio == pytest.approx(100 / 21 / 10)
    small = fold_send(first, "machine-a", "machine-b", 4096, 0.9, 10 * MIB)
    assert small.probe_ratio == first.probe_ratio  # a final send measures the set-up
    second = fold_send(small, "machine-a", "machine-b", 100 * MIB, 1.0 + 100 / 3, 10 * MIB)
    assert second.fixed_s > 0
    achieved = 100 * MIB / (1.0 + 100 / 3 - second.fixed_s) / (10 * MIB)
    assert second.probe_ratio == pytest.approx(0.5 * achieved + 0.5 * first.probe_ratio)
    unprobed = fold_send(second, "machine-a", "machine-b", 100 * MIB, 20.0)
    assert unprobed.probe_ratio == second.probe_ratio


def test_the_link_now_is_the_probe_scaled_by_the_share_sends_carry() -> None:
    history = folded((4096, 1.0), (100 * MIB, 11.0)).model_copy(update={"probe_ratio": 0.5})
    now = link_now(history, "machine-a", "machine-b", 30e6)
    assert now is not None
    assert (now.bytes_per_s, now.fixed_s) == (15e6, history.fixed_s)
    assert link_now(history, "machine-a", "machine-b", None) is history  # no probe taken


def test_a_probe_stands_in_for_history_only_where_there_is_none() -> None:
    first = link_now(None, "machine-a", "machine-b", 30e6)
    assert first is not None and (first.bytes_per_s, first.fixed_s) == (30e6, 0.0)
    set_up_only = folded((4096, 0.8))
    now = link_now(set_up_only, "machine-a", "machine-b", 30e6)
    assert now is not None and (now.bytes_per_s, now.fixed_s) == (30e6, set_up_only.fixed_s)
    # sends measured before probes existed: their rate includes what a ZFS send costs
    unprobed = folded((4096, 1.0), (100 * MIB, 11.0))
    assert link_now(unprobed, "machine-a", "machine-b", 30e6) is unprobed
