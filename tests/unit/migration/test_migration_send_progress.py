"""``send_snapshot(on_progress=...)``: while the source agent's blocking ``transfer.send`` runs,
the orchestrator polls the send's status over another connection and hands the samples
on; the send's outcome is what it was without progress, whatever the polls do.

The agents are small fakes answering as the real methods do (those are tested against a real
stream in tests/host/transfer/test_transfer_send_status.py); what is tested here is the
orchestrator's threading, polling and sample shaping."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.api import Committed, ReceiveEndpoint, ReceiveState, ReceiveSummary, SendStatus
from ployz.agent.api import SendSummary as Summary
from ployz.agent.errors import AgentUnreachable, RemoteError, UnknownMethod, UnknownTransfer
from ployz.deploy.migration import snapshot_send
from ployz.deploy.migration.snapshot_send import ProgressSample, send_snapshot

GUID = 1234
SIZE = 1000
COMMITTED = Committed(kind="zfs", size=SIZE, checksum="00", snapshot="machine-b/shop.db@s1",
                      guid=GUID)
SUMMARY = dict(bytes=SIZE, wire_bytes=600, seconds=2.0, resumes=0, codec="zstd",
               committed=COMMITTED)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_send, "POLL_INTERVAL_S", 0.02)


class Props:
    def get(self, name: str, props: list[str]) -> dict[str, Any]:
        return {"guid": GUID}

    def capacity(self) -> None:
        """The agent answers (it never went away)."""


class StatusAgent:
    """The second connection: answers ``send_status`` from a script of answers (a status is
    returned, an exception raised), and lets the send finish once the script is used up."""

    address = "10.210.0.2:7070"

    def __init__(self, source: SourceAgent) -> None:
        self.source = source
        self.closed = False
        self.transfer = self

    def send_status(self, transfer_id: str) -> SendStatus:
        assert transfer_id == "t1" and not self.closed
        source = self.source
        source.status_threads.add(threading.get_ident())
        answer = source.statuses.pop(0) if source.statuses else None
        if not source.statuses:
            source.polled.set()
        if answer is None:
            raise UnknownTransfer("t1", "send")
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


class SourceAgent:
    address = "10.210.0.2:7070"

    def __init__(self, statuses: list[Any], error: Exception | None = None) -> None:
        self.statuses = statuses
        self.error = error
        self.polled = threading.Event()
        self.forks: list[StatusAgent] = []
        self.send_threads: set[int] = set()
        self.status_threads: set[int] = set()
        self.zfs = Props()
        self.transfer = self

    def fork(self) -> StatusAgent:
        agent = StatusAgent(self)
        self.forks.append(agent)
        return agent

    def send(self, transfer_id: str, snapshot: str, to: str, ticket: str, **options: Any
             ) -> Summary:
        self.send_threads.add(threading.get_ident())
        # The send lasts until every scripted poll was answered: polls must run beside it.
        assert self.polled.wait(10), "no progress polls while the send ran"
        if self.error is not None:
            raise self.error
        return Summary(**SUMMARY)


class TargetAgent:
    address = "10.210.0.3:7070"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.transfer = self

    def receive(self, transfer_id: str, dataset: str, **options: Any) -> ReceiveEndpoint:
        self.calls.append("receive")
        return ReceiveEndpoint(address="10.210.0.3:40000")

    def receive_wait(self, transfer_id: str, timeout_s: float = 30.0) -> ReceiveState:
        self.calls.append("receive_wait")
        return ReceiveState(state="committed", result=ReceiveSummary(**SUMMARY))

    def receive_cancel(self, transfer_id: str) -> ReceiveState:
        self.calls.append("receive_cancel")
        return ReceiveState(state="failed", error="cancelled")


def status(done: int, total: int | None, rate: float, eta: float | None) -> SendStatus:
    return SendStatus(bytes=done, total=total, wire_bytes=done // 2, rate=rate, eta_s=eta,
                      finished=False)


def send(source: SourceAgent, target: TargetAgent, **options: Any):
    return send_snapshot(source, target, Ed25519PrivateKey.generate(),  # type: ignore[arg-type]
                         transfer_id="t1", snapshot="machine-a/shop.db@s1", base=None,
                         target_dataset="machine-b/shop.db", **options)


def test_samples_arrive_while_the_send_runs_then_100_percent() -> None:
    source = SourceAgent([None, status(200, SIZE, 100.0, 8.0), status(600, SIZE, 200.0, 2.0)])
    samples: list[ProgressSample] = []
    result = send(source, TargetAgent(), on_progress=samples.append)
    assert result.received.bytes == SIZE
    assert samples == [
        ProgressSample(200, SIZE, 100.0, 8.0),
        ProgressSample(600, SIZE, 200.0, 2.0),
        ProgressSample(SIZE, SIZE, SIZE / 2.0, 0.0),
    ]
    # the send and the polls ran on different threads, over different connections
    assert source.send_threads.isdisjoint(source.status_threads)
    assert len(source.forks) == 1 and source.forks[0].closed


def test_the_callers_estimate_stands_in_for_an_unknown_total() -> None:
    source = SourceAgent([status(250, None, 50.0, None), status(1500, None, 50.0, None)])
    samples: list[ProgressSample] = []
    send(source, TargetAgent(), total=SIZE, on_progress=samples.append)
    assert samples[0] == ProgressSample(250, SIZE, 50.0, 15.0)
    # an estimate that was too small is raised to the bytes done, never below them
    assert samples[1].total == 1500 and samples[1].eta_s == 0.0


def test_failing_polls_and_a_failing_handler_do_not_break_the_send() -> None:
    source = SourceAgent([AgentUnreachable("10.210.0.2:7070", "reset"), ValueError("garbled"),
                          status(100, SIZE, 10.0, 90.0)])
    calls: list[ProgressSample] = []

    def handler(sample: ProgressSample) -> None:
        calls.append(sample)
        raise BrokenPipeError("stdout closed")

    result = send(source, TargetAgent(), on_progress=handler)
    assert result.received.committed == COMMITTED
    # a handler that failed is not called again, not even for the final sample
    assert calls == [ProgressSample(100, SIZE, 10.0, 90.0)]


def test_an_agent_without_send_status_gets_only_the_final_sample() -> None:
    source = SourceAgent([UnknownMethod("rpc.unknown-method", "no method")])
    samples: list[ProgressSample] = []
    send(source, TargetAgent(), on_progress=samples.append)
    assert samples == [ProgressSample(SIZE, SIZE, SIZE / 2.0, 0.0)]


def test_the_send_error_is_raised_as_without_progress() -> None:
    error = RemoteError("transfer.Refused", "ticket refused")
    for on_progress in (None, lambda sample: None):
        source = SourceAgent([status(10, SIZE, 1.0, 990.0)], error=error)
        if on_progress is None:
            source.polled.set()
        target = TargetAgent()
        with pytest.raises(RemoteError) as info:
            send(source, target, on_progress=on_progress)
        assert info.value is error
        assert target.calls == ["receive", "receive_cancel"]
        assert len(source.forks) == (0 if on_progress is None else 1)


class StallingSource(SourceAgent):
    """Its first send moves 300 bytes, then nothing: it ends only when the receiver it sends
    to is cancelled (as a sender whose peer vanished gives up). The second send resumes."""

    def __init__(self, target: StallingTarget) -> None:
        super().__init__([status(300, SIZE, 50.0, 14.0)] * 1000)
        self.target = target
        self.sends = 0

    def send(self, transfer_id: str, snapshot: str, to: str, ticket: str, **options: Any
             ) -> Summary:
        self.sends += 1
        if self.sends == 1:
            assert self.target.cancelled.wait(10), "the stalled send was never cut"
            raise RemoteError("transfer.RetriesExhausted", "the receiver went away")
        return Summary(**SUMMARY)

    def send_status(self, transfer_id: str) -> SendStatus:
        return status(300, SIZE, 0.0, None)


class StallingTarget(TargetAgent):
    def __init__(self) -> None:
        super().__init__()
        self.cancelled = threading.Event()
        self.zfs = Props()

    def fork(self) -> StallingTarget:
        return self

    def close(self) -> None:
        pass

    def receive_wait(self, transfer_id: str, timeout_s: float = 30.0) -> ReceiveState:
        self.calls.append("receive_wait")
        if self.cancelled.is_set() and self.calls.count("receive") == 1:
            return ReceiveState(state="failed", error="cancelled")
        return ReceiveState(state="committed", result=ReceiveSummary(**SUMMARY))

    def receive_cancel(self, transfer_id: str) -> ReceiveState:
        self.cancelled.set()
        return super().receive_cancel(transfer_id)


def test_a_stalled_send_is_cut_and_resumed_by_a_new_receiver() -> None:
    target = StallingTarget()
    source = StallingSource(target)
    reasons: list[tuple[str, int | None]] = []
    result = send(source, target, on_progress=lambda sample: None, stall_s=0.2,
                  on_interruption=lambda reason, sent: reasons.append((reason, sent)))
    assert result.received.committed == COMMITTED
    assert source.sends == 2
    assert target.calls.count("receive") == 2  # the cut one's receiver is started anew
    ((reason, sent),) = reasons
    assert "stalled: no progress for" in reason and sent == 300
