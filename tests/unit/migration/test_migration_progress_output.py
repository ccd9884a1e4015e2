"""How ``ployzctl migrate apply`` shows progress events: a bar rewritten in place on a terminal,
nothing off a terminal (logs stay clean), one JSON line each with ``--json``. The command runs
for real down to the migration, which is replaced by one that emits a scripted event stream."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any

import pytest

from ployz.deploy.events import Phase, TransferProgress
from ployzctl.commands import migrate as migrate_command
from ployzctl.main import main
from ployzctl.progress_bar import WIDTH, bar_line

EXPECTED: list[dict[str, Any]] = [
    {"event": "phase", "phase": "pre-copy"},
    {"event": "progress", "volume": "db", "round": 1, "kind": "full", "bytes": 250_000_000,
     "total": 1_000_000_000, "rate": 50_000_000.0, "eta_s": 15.0},
    # the estimate was too small: the bar stops at 100 %
    {"event": "progress", "volume": "db", "round": 1, "kind": "full", "bytes": 1_300_000_000,
     "total": 1_000_000_000, "rate": 50_000_000.0, "eta_s": 0.0},
    {"event": "progress", "volume": "db", "round": 2, "kind": "incremental", "bytes": 0,
     "total": None, "rate": 0.0, "eta_s": None},
    {"event": "phase", "phase": "fence"},
]
EVENTS = [
    Phase(phase="pre-copy"),
    TransferProgress(volume="db", round=1, kind="full", bytes=250_000_000, total=1_000_000_000,
                     rate=50_000_000.0, eta_s=15.0),
    TransferProgress(volume="db", round=1, kind="full", bytes=1_300_000_000,
                     total=1_000_000_000, rate=50_000_000.0, eta_s=0.0),
    TransferProgress(volume="db", round=2, kind="incremental", bytes=0, total=None, rate=0.0,
                     eta_s=None),
    Phase(phase="fence"),
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def apply(monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    def migrate(cp: Any, agents: Any, ref: Any, to: str, *, keep_source: bool,
                max_downtime_s: float | None, expected: Any, bwlimit: float,
                emit: Any) -> None:
        for event in EVENTS:
            emit(event)

    monkeypatch.setattr(migrate_command, "open_control", lambda args: contextlib.nullcontext())
    monkeypatch.setattr(migrate_command, "agent_directory",
                        lambda args: contextlib.nullcontext())
    monkeypatch.setattr(migrate_command, "migrate", migrate)
    assert main(["migrate", "apply", "shop/db", "--to", "machine-b", *flags]) == 0


def test_a_terminal_gets_one_bar_rewritten_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    apply(monkeypatch)
    out = terminal.getvalue()
    lines = out.split("\n")
    assert lines[0] == "== pre-copy"
    # the three progress events share one line, each drawn over the previous one
    draws = lines[1].split("\r")
    assert draws[0] == "" and len(draws) == 4
    assert draws[1].startswith("db full [" + "#" * (WIDTH // 4) + "-")
    assert " 25% 250.0 MB 50.0 MB/s eta    15s" in draws[1]
    assert draws[2].startswith("db full [" + "#" * WIDTH + "] 100% 1.3 GB")
    assert draws[3].startswith("db incremental [" + "?" * WIDTH + "]   ?% 0 B 0 B/s")
    assert "eta" not in draws[3]
    # the next event starts on a line of its own
    assert lines[2] == "== fence" and lines[3:] == [""]


def test_no_terminal_no_bar(monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    apply(monkeypatch)
    assert capsys.readouterr().out == "== pre-copy\n== fence\n"


def test_json_prints_each_progress_event_as_a_line(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    apply(monkeypatch, "--json")
    out = capsys.readouterr().out
    assert "\r" not in out
    assert [json.loads(line) for line in out.splitlines()] == EXPECTED


def test_the_bar_never_shows_more_than_100_percent() -> None:
    assert bar_line(1.7, 1700, 10.0, 0.0).startswith("[" + "#" * WIDTH + "] 100% ")
    assert bar_line(-0.1, 0, 0.0, None).startswith("[" + "-" * WIDTH + "]   0% ")
