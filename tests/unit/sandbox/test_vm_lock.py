"""The VM harness runs one VM at a time per project: a second run waits for the first, says so,
and goes on as soon as the first one ends."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import pytest

from ployz.sandbox import vm


def test_a_second_run_waits_for_the_first_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(vm, "REPORTS", tmp_path)
    entered = threading.Event()

    def second_run() -> None:
        with vm._one_vm_at_a_time():
            entered.set()

    with open(tmp_path / ".vm.lock", "w") as first:
        fcntl.flock(first, fcntl.LOCK_EX)
        waiting = threading.Thread(target=second_run)
        waiting.start()
        time.sleep(0.3)
        assert not entered.is_set()
        fcntl.flock(first, fcntl.LOCK_UN)
    waiting.join(10)
    assert entered.is_set()
    assert "another VM run of this project is in progress" in capsys.readouterr().err


def test_a_run_alone_does_not_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(vm, "REPORTS", tmp_path)
    with vm._one_vm_at_a_time():
        pass
    with vm._one_vm_at_a_time():
        pass
    assert capsys.readouterr().err == ""
