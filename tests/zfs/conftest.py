"""Throwaway pools on sparse files, one per test that asks, destroyed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.zfs.zfshelpers import sh

POOL_SIZE = "512M"


@pytest.fixture
def pool_factory(in_vm: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Callable[..., str]]:
    created: list[tuple[str, Path]] = []

    def make(size: str = POOL_SIZE) -> str:
        name = f"tp{uuid.uuid4().hex[:8]}"
        image = tmp_path_factory.mktemp("pools") / f"{name}.img"
        sh("truncate", "-s", size, str(image))
        sh("zpool", "create", "-f", "-O", "compression=off", "-m", f"/run/{name}", name,
           str(image))
        created.append((name, image))
        return name

    yield make
    for name, image in created:
        sh("zpool", "destroy", "-f", name, check=False)
        image.unlink(missing_ok=True)


@pytest.fixture
def pool(pool_factory: Callable[..., str]) -> str:
    return pool_factory()
