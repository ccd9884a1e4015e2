"""Fixtures of the migrate command tests: the deploy suite's seeded control plane and the agent
suite's agent process, shared rather than copied."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))

from deploy_cluster import Cluster, make_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path)
