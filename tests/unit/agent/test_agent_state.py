"""AgentState: the replay cache's expiry and the operation journal across reopenings."""

from __future__ import annotations

from pathlib import Path

from ployz.agent.state import AgentState


def test_nonce_is_remembered_until_it_expires(tmp_path: Path):
    state = AgentState(tmp_path)
    assert state.remember("n1", keep_until_ms=1_000, now_ms=0) is True
    assert state.remember("n1", keep_until_ms=1_000, now_ms=999) is False
    assert state.remember("n1", keep_until_ms=5_000, now_ms=1_001) is True
    state.close()


def test_running_operations_become_interrupted_at_next_open(tmp_path: Path):
    state = AgentState(tmp_path)
    done = state.begin_operation("zfs.snapshot", {"snapshots": ["t/a@1"]}, "n1", now_ms=10)
    state.finish_operation(done, None, now_ms=20)
    failed = state.begin_operation("zfs.destroy", {"dataset": "t/a"}, "n2", now_ms=30)
    state.finish_operation(failed, "zfs.DatasetBusy", now_ms=40)
    state.begin_operation("container.stop", {"name": "c"}, "n3", now_ms=50)
    assert state.interrupted_at_start == 0
    state.close()

    reopened = AgentState(tmp_path)
    assert reopened.interrupted_at_start == 1
    statuses = [(op["method"], op["status"], op["error_code"]) for op in reopened.operations()]
    assert statuses == [
        ("container.stop", "interrupted", None),
        ("zfs.destroy", "failed", "zfs.DatasetBusy"),
        ("zfs.snapshot", "ok", None),
    ]
    [interrupted] = reopened.operations("interrupted")
    assert interrupted["params"] == {"name": "c"} and interrupted["finished_ms"] is None
    assert [op["method"] for op in reopened.operations(limit=1)] == ["container.stop"]
    reopened.close()
