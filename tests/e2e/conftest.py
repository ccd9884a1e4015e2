"""One sandbox cluster for the whole e2e session: building it costs minutes under emulation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ployz.sandbox.cluster import Cluster


@pytest.fixture(scope="session")
def cluster(in_vm: None) -> Iterator[Cluster]:
    built = Cluster(2)
    try:
        built.start()
        yield built
    finally:
        built.stop()
