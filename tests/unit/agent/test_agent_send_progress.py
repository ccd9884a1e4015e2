"""The agent's book of running sends: what ``transfer.send_status`` answers from, and that it
forgets a send shortly after it ended (an agent runs for months; sends must not pile up)."""

from __future__ import annotations

import pytest

from ployz.agent.errors import UnknownTransfer
from ployz.agent.methods.transfers import SendProgress
from ployz.transfer.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_status_is_the_latest_sample_and_is_forgotten_after_the_grace() -> None:
    clock = Clock()
    book = SendProgress(grace=30.0, clock=clock)
    with book.track("t") as record:
        assert book.status("t").model_dump() == {
            "bytes": 0, "total": None, "wire_bytes": 0, "rate": 0.0, "eta_s": None,
            "finished": False}
        record(Progress(10, 100, 8, 5.0, 18.0))
        record(Progress(40, 100, 30, 6.0, 10.0))
        clock.now += 3600  # a send running for an hour is not forgotten
        assert book.status("t").bytes == 40
        record(Progress(100, 100, 70, 6.0, 0.0, finished=True))
    clock.now += 29
    assert book.status("t").model_dump() == {
        "bytes": 100, "total": 100, "wire_bytes": 70, "rate": 6.0, "eta_s": 0.0,
        "finished": True}
    clock.now += 2
    with pytest.raises(UnknownTransfer):
        book.status("t")


def test_a_failed_send_is_forgotten_too() -> None:
    clock = Clock()
    book = SendProgress(grace=1.0, clock=clock)
    with pytest.raises(RuntimeError), book.track("t"):
        raise RuntimeError("the stream broke")
    assert book.status("t").finished is False
    clock.now += 2
    with pytest.raises(UnknownTransfer):
        book.status("t")


def test_a_retried_send_is_not_forgotten_when_the_first_attempt_ends() -> None:
    clock = Clock()
    book = SendProgress(grace=1.0, clock=clock)
    first, second = book.track("t"), book.track("t")
    record_first = first.__enter__()
    record_second = second.__enter__()
    record_second(Progress(7, None, 7, 1.0, None))
    record_first(Progress(5, None, 5, 1.0, None))  # the abandoned attempt's last sample
    first.__exit__(None, None, None)
    clock.now += 2
    assert book.status("t").bytes == 7
    second.__exit__(None, None, None)
    clock.now += 2
    with pytest.raises(UnknownTransfer):
        book.status("t")
