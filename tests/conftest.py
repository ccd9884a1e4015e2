"""Shared test configuration: the real-ZFS suites must never be skipped silently."""

from __future__ import annotations

import os
import sys

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/zfs and tests/e2e need the real module: mark them, and refuse to run
    them outside the VM rather than skipping them."""
    for item in items:
        parts = item.path.parts
        if "zfs" in parts and "tests" in parts:
            item.add_marker(pytest.mark.zfs)
        if "e2e" in parts and "tests" in parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def in_vm() -> None:
    if not os.path.exists("/dev/zfs"):
        pytest.fail("real-ZFS tests run inside the test VM: "
                    "`python -m ployz.sandbox.vm pytest tests/zfs` (or `make test-zfs`)",
                    pytrace=False)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the VM, a failure's traceback is printed as it happens: the run lasts most of an hour
    and ends, when it overruns, without pytest's final summary."""
    if report.failed and os.environ.get("PLOYZ_IN_VM"):
        print(f"\n--- {report.nodeid} failed ({report.when}) ---\n{report.longreprtext}\n",
              file=sys.stderr, flush=True)
