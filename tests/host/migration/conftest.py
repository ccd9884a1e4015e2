"""Fixtures of the migrate command tests: the deploy suite's seeded control plane and the agent
suite's agent process, shared rather than copied."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host.deploy.deploy_cluster import Cluster, make_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path)
