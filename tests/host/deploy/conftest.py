"""Fixtures of the deploy command tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from deploy_cluster import Cluster, make_cluster

# The agent suite's helper that runs a real agent process, shared rather than copied.
sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path)
