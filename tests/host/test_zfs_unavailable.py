"""On a machine without the ZFS module every call fails with one clear, typed error."""

from __future__ import annotations

import os

import pytest

from ployz import zfs


def test_calls_without_dev_zfs_raise_zfs_unavailable() -> None:
    assert not os.path.exists("/dev/zfs"), "host tests expect a host without the ZFS module"
    with pytest.raises(zfs.ZFSUnavailable, match="modprobe zfs") as info:
        zfs.snapshots("tank/data")
    assert info.value.name == "/dev/zfs"
