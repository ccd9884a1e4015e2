"""Each fuzz harness for a bounded time, from its seeds, as part of ``make test``: a finding
(crash, hang, untyped error, a result the protocol does not allow) fails the test, with the
input that caused it. ``make fuzz`` runs the same harnesses for longer.

``PLOYZ_FUZZ_SECONDS`` changes the time per harness (20 s by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz import run

SECONDS = int(os.environ.get("PLOYZ_FUZZ_SECONDS", "20"))


@pytest.mark.parametrize("name", sorted(run.HARNESSES))
def test_harness_finds_nothing(name: str, tmp_path: Path) -> None:
    result = run.run(name, SECONDS, tmp_path)
    if result.found:
        log = result.log.read_text(errors="replace").splitlines()
        tail = "\n".join(line for line in log if not line.startswith("INFO: Instrumenting"))
        pytest.fail(f"{result.summary()}\n(exit {result.returncode})\n{tail[-6000:]}",
                    pytrace=False)
    assert result.runs > 0, f"the {name} harness ran no input:\n{result.summary()}"
