"""The line a person reads for each run event that is not a transfer: a drain's move, the
settling of an earlier run, an abort and what it put back. None of them may fall back to the
raw field dump, which is for events no one has given words yet."""

from __future__ import annotations

from ployz.deploy.events import Aborted, Aborting, Draining, Recover, RolledBack
from ployzctl.events import describe_event


def test_a_drain_names_the_target() -> None:
    assert describe_event(Draining(service="shop/web", target="machine-b")) == (
        "moves to machine-b")


def test_settling_an_earlier_run_names_it_and_what_is_done() -> None:
    line = describe_event(Recover(deploy_id="d1", action="roll-back", step="fence"))
    assert line == "settling the unfinished run d1: roll-back (fence)"


def test_an_abort_says_where_and_why() -> None:
    assert describe_event(Aborting(step="final-send", error="stream corrupt")) == (
        "aborting at final-send: stream corrupt")


def test_an_abort_lists_what_it_undid_and_what_it_could_not() -> None:
    line = describe_event(Aborted(deploy_id="d2", step="start", error="unhealthy",
                                  undone=["restarted the source"],
                                  left=["destroy machine-b/shop.db: agent unreachable"]))
    assert line == ("aborted d2 at start: unhealthy; undone: restarted the source; NOT undone "
                    "(the next run of the namespace retries): destroy machine-b/shop.db: "
                    "agent unreachable")


def test_a_clean_rollback_says_nothing_was_left() -> None:
    line = describe_event(RolledBack(deploy_id="d3", undone=[], left=[]))
    assert line == "rolled back d3; undone: nothing"
    assert "{" not in line
