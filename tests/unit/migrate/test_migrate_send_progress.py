"""``send_snapshot(on_progress=...)``: while the source agent's blocking ``transfer.send`` runs,
the orchestrator polls ``transfer.send_status`` over another connection and hands the samples
on; the send's outcome is what it was without progress, whatever the polls do.

The agents are small fakes answering as the real methods do (those are tested against a real
stream in tests/host/transfer/test_transfer_send_status.py); what is tested here is the
orchestrator's threading, polling and sample shaping."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.errors import AgentUnreachable, RemoteError, UnknownMethod
from ployz.deploy.migration import transfer as transfer_module
from ployz.deploy.migration.transfer import send_snapshot

GUID = 1234
SIZE = 1000


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer_module, "POLL_INTERVAL_S", 0.02)


class StatusClient:
    """The second connection: answers ``transfer.send_status`` from a script of answers (a dict
    is returned, an exception raised), and lets the send finish once the script is used up."""

    def __init__(self, source: SourceAgent) -> None:
        self.source = source
        self.closed = False

    def call(self, method: str, params: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        assert method == "transfer.send_status" and params == {"transfer_id": "t1"}
        assert not self.closed
        source = self.source
        source.status_threads.add(threading.get_ident())
        answer = source.statuses.pop(0) if source.statuses else None
        if not source.statuses:
            source.polled.set()
        if answer is None:
            raise RemoteError("agent.unknown-transfer", "no send with transfer id 't1'")
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
        self.forks: list[StatusClient] = []
        self.send_threads: set[int] = set()
        self.status_threads: set[int] = set()

    def fork(self) -> StatusClient:
        client = StatusClient(self)
        self.forks.append(client)
        return client

    def call(self, method: str, params: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        if method == "zfs.get":
            return {"guid": GUID}
        assert method == "transfer.send"
        self.send_threads.add(threading.get_ident())
        # The send lasts until every scripted poll was answered: polls must run beside it.
        assert self.polled.wait(10), "no progress polls while the send ran"
        if self.error is not None:
            raise self.error
        return {"bytes": SIZE, "wire_bytes": 600, "seconds": 2.0, "resumes": 0,
                "codec": "zstd", "committed": {"guid": GUID}}


class TargetAgent:
    address = "10.210.0.3:7070"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, method: str, params: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        self.calls.append(method)
        if method == "transfer.receive":
            return {"address": "10.210.0.3:40000"}
        if method == "transfer.receive_wait":
            return {"state": "committed", "error": None,
                    "result": {"bytes": SIZE, "wire_bytes": 600, "seconds": 2.0, "resumes": 0,
                               "codec": "zstd", "committed": {"guid": GUID}}}
        assert method == "transfer.receive_cancel"
        return None


def status(done: int, total: int | None, rate: float, eta: float | None) -> dict[str, Any]:
    return {"bytes": done, "total": total, "wire_bytes": done // 2, "rate": rate, "eta_s": eta,
            "finished": False}


def send(source: SourceAgent, target: TargetAgent, **options: Any):
    return send_snapshot(source, target, Ed25519PrivateKey.generate(),  # type: ignore[arg-type]
                         transfer_id="t1", snapshot="machine-a/shop.db@s1", base=None,
                         target_dataset="machine-b/shop.db", **options)


def test_samples_arrive_while_the_send_runs_then_100_percent() -> None:
    source = SourceAgent([None, status(200, SIZE, 100.0, 8.0), status(600, SIZE, 200.0, 2.0)])
    samples: list[dict[str, Any]] = []
    result = send(source, TargetAgent(), on_progress=samples.append)
    assert result.bytes == SIZE
    assert samples == [
        {"bytes": 200, "total": SIZE, "rate": 100.0, "eta_s": 8.0},
        {"bytes": 600, "total": SIZE, "rate": 200.0, "eta_s": 2.0},
        {"bytes": SIZE, "total": SIZE, "rate": SIZE / 2.0, "eta_s": 0.0},
    ]
    # the send and the polls ran on different threads, over different connections
    assert source.send_threads.isdisjoint(source.status_threads)
    assert len(source.forks) == 1 and source.forks[0].closed


def test_the_callers_estimate_stands_in_for_an_unknown_total() -> None:
    source = SourceAgent([status(250, None, 50.0, None), status(1500, None, 50.0, None)])
    samples: list[dict[str, Any]] = []
    send(source, TargetAgent(), total=SIZE, on_progress=samples.append)
    assert samples[0] == {"bytes": 250, "total": SIZE, "rate": 50.0, "eta_s": 15.0}
    # an estimate that was too small is raised to the bytes done, never below them
    assert samples[1]["total"] == 1500 and samples[1]["eta_s"] == 0.0


def test_failing_polls_and_a_failing_handler_do_not_break_the_send() -> None:
    source = SourceAgent([AgentUnreachable("10.210.0.2:7070", "reset"), ValueError("garbled"),
                          status(100, SIZE, 10.0, 90.0)])
    calls: list[dict[str, Any]] = []

    def handler(sample: dict[str, Any]) -> None:
        calls.append(sample)
        raise BrokenPipeError("stdout closed")

    result = send(source, TargetAgent(), on_progress=handler)
    assert result.committed == {"guid": GUID}
    # a handler that failed is not called again, not even for the final sample
    assert calls == [{"bytes": 100, "total": SIZE, "rate": 10.0, "eta_s": 90.0}]


def test_an_agent_without_send_status_gets_only_the_final_sample() -> None:
    source = SourceAgent([UnknownMethod("rpc.unknown-method", "no method")])
    samples: list[dict[str, Any]] = []
    send(source, TargetAgent(), on_progress=samples.append)
    assert samples == [{"bytes": SIZE, "total": SIZE, "rate": SIZE / 2.0, "eta_s": 0.0}]


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
        assert target.calls == ["transfer.receive", "transfer.receive_cancel"]
        assert len(source.forks) == (0 if on_progress is None else 1)
