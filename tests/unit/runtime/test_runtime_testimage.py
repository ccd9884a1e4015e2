"""The test image's root file system, built from the static busybox binary."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from ployz.runtime.testimage import BUSYBOX_PATH, BusyboxNotStatic, build_rootfs_tar


def test_rootfs_holds_busybox_applets_and_users():
    with tarfile.open(fileobj=io.BytesIO(build_rootfs_tar()), mode="r") as tar:
        members = {m.name: m for m in tar.getmembers()}
        busybox = tar.extractfile("bin/busybox")
        assert busybox is not None
        assert busybox.read() == BUSYBOX_PATH.read_bytes()
        passwd = tar.extractfile("etc/passwd")
        assert passwd is not None and b"nobody:x:65534" in passwd.read()
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["bin/busybox"].mode == 0o755
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777


def test_dynamically_linked_binary_is_refused():
    interpreter = Path(sys.executable).resolve()
    with pytest.raises(BusyboxNotStatic, match="busybox-static"):
        build_rootfs_tar(interpreter)
