"""Fixtures of the deploy command tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host.deploy.deploy_cluster import Cluster, make_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path)
