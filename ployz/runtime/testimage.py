"""A tiny busybox image built locally, for tests and the sandbox (no registry is reachable).

The root file system holds Debian's statically linked busybox (package ``busybox-static``) with
one symlink per applet the tests use, plus minimal ``/etc/passwd`` and ``/etc/group`` so that
containers can run as a non-root user. It is packed in memory and imported through the Engine API.
"""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

from ployz.runtime.docker_runtime import DockerRuntime

TEST_IMAGE = "ployz-test/busybox:latest"
BUSYBOX_PATH = Path("/bin/busybox")

_APPLETS = (
    "sh", "cat", "cp", "date", "dd", "echo", "env", "false", "grep", "head", "hostname", "id",
    "kill", "ls", "mkdir", "mv", "nc", "ps", "rm", "sed", "sha256sum", "sleep", "sync", "tail",
    "test", "touch", "true", "wc", "wget", "httpd",
)
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_PT_INTERP = 3


class BusyboxNotStatic(Exception):
    """The busybox binary found needs a dynamic loader, which the image does not contain."""


def build_rootfs_tar(busybox: Path = BUSYBOX_PATH) -> bytes:
    """The image's root file system as an uncompressed tar archive."""
    binary = busybox.read_bytes()
    if not _is_static_elf(binary):
        raise BusyboxNotStatic(
            f"{busybox} is dynamically linked; install the Debian package busybox-static"
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "etc", "tmp", "root", "data"):
            _add_dir(tar, directory, mode=0o1777 if directory == "tmp" else 0o755)
        _add_file(tar, "bin/busybox", binary, mode=0o755)
        for applet in _APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        _add_file(tar, "etc/passwd", _PASSWD.encode(), mode=0o644)
        _add_file(tar, "etc/group", _GROUP.encode(), mode=0o644)
    return buffer.getvalue()


def ensure_test_image(runtime: DockerRuntime, reference: str = TEST_IMAGE) -> str:
    """Imports the test image into ``runtime``'s daemon unless it is already there."""
    if not runtime.has_image(reference):
        runtime.import_rootfs(
            build_rootfs_tar(), reference, changes=['ENV PATH=/bin', 'CMD ["/bin/sh"]']
        )
    return reference


def _add_dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _is_static_elf(binary: bytes) -> bool:
    """True for a 64-bit little-endian ELF without a PT_INTERP program header."""
    if binary[:4] != b"\x7fELF" or binary[4] != 2 or binary[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", binary, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", binary, 0x36)
    return all(
        struct.unpack_from("<I", binary, phoff + i * phentsize)[0] != _PT_INTERP
        for i in range(phnum)
    )
