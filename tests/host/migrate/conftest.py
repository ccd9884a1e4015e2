"""Fixtures of the migrate command tests: the deploy suite's seeded control plane, shared rather
than copied."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))

from deploy_cluster import Cluster, make_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path)
