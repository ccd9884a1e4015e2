"""Datasets: existence, creation, destruction, properties and mounting."""

from __future__ import annotations

import errno as E
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ployz._lzc import ffi, lib
from ployz.zfs.core import check, enc, ensure_init
from ployz.zfs.errors import DatasetBusy, DatasetNotFound, ZFSError
from ployz.zfs.nvlist import NvValue, nvlist_in
from ployz.zfs.program import U64, run_readonly


def exists(name: str) -> bool:
    """Whether a dataset, snapshot or bookmark of that name exists."""
    ensure_init()
    return bool(lib.lzc_exists(enc(name)))


def create(dataset: str, props: Mapping[str, NvValue] | None = None) -> None:
    """Creates a filesystem. Numeric properties (quota, ...) take integers; index properties
    (canmount, compression, ...) must be given as their numeric index, as lzc expects."""
    ensure_init()
    with nvlist_in(props) as nvl:
        check(lib.lzc_create(enc(dataset), lib.LZC_DATSET_TYPE_ZFS, nvl, ffi.NULL, 0), dataset,
              action="create")


# Reads the requested properties of one dataset or snapshot; "-" or nil means unset.
_GET_PROPS = """
args = ...
local out = {}
for i, prop in ipairs(args["props"]) do
    local value = zfs.get_prop(args["name"], prop)
    if value ~= nil then out[prop] = value end
end
return out
"""

# Properties that are opaque strings even when they look like numbers.
_STRING_PROPS = {"receive_resume_token", "mountpoint", "origin", "name"}


def get(name: str, names: Iterable[str]) -> dict[str, Any]:
    """The named properties of a dataset or snapshot: ints for numbers, strings otherwise, None
    for unset ones. ``receive_resume_token`` is not None only while a receive can resume."""
    names = list(names)
    found = run_readonly(name, _GET_PROPS, {"name": name, "props": names},
                         "get properties") or {}
    values: dict[str, Any] = {}
    for prop in names:
        value = found.get(prop)
        if isinstance(value, int) and not isinstance(value, bool):
            value %= U64
        if value in ("-", "") and prop in _STRING_PROPS:
            value = None
        values[prop] = value
    return values


def mounts_of(dataset: str) -> list[str]:
    """Mount points where ``dataset`` is mounted, from the kernel's mount table."""
    found = []
    with open("/proc/self/mounts") as table:
        for line in table:
            source, target, fstype = line.split()[:3]
            if fstype == "zfs" and source == dataset:
                found.append(target.replace("\\040", " "))
    return found


def mount(dataset: str, mountpoint: str) -> None:
    """Mounts a filesystem at ``mountpoint`` (created if missing) with mount(2), the way the ZFS
    mount helper does, so no CLI is involved."""
    ensure_init()
    if mountpoint in mounts_of(dataset):
        return
    os.makedirs(mountpoint, exist_ok=True)
    if lib.mount(enc(dataset), enc(mountpoint), b"zfs", 0, b"zfsutil") != 0:
        err = ffi.errno
        if err == E.ENOENT and not exists(dataset):
            raise DatasetNotFound(err, dataset, "cannot mount: does not exist")
        raise ZFSError(err, dataset, f"cannot mount at {mountpoint}: {os.strerror(err)}")


def unmount(dataset: str) -> None:
    """Unmounts every mount of ``dataset``."""
    for target in mounts_of(dataset):
        if lib.umount2(enc(target), 0) != 0:
            err = ffi.errno
            raise DatasetBusy(err, dataset, f"cannot unmount {target}: {os.strerror(err)}")


def destroy(dataset: str) -> None:
    """Destroys one filesystem that has no snapshots or children, unmounting it first."""
    ensure_init()
    unmount(dataset)
    check(lib.lzc_destroy(enc(dataset)), dataset, action="destroy")


def sync(pool: str) -> None:
    """Waits until the pool's open transaction group is on disk. Space properties (``written``,
    ``used``) count a write only once its transaction group syncs, up to ``zfs_txg_timeout``
    (5 s) later: a rate measured from them without a sync sees bursts and silences."""
    ensure_init()
    with nvlist_in({"force": False}) as nvl:
        check(lib.lzc_sync(enc(pool), nvl, ffi.NULL), pool, action="sync")


def rename(source: str, target: str) -> None:
    ensure_init()
    check(lib.lzc_rename(enc(source), enc(target)), source, action=f"rename to {target}")
