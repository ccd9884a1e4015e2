"""Snapshots, bookmarks and holds: the objects that make incremental sends safe."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ployz._lzc import ffi, lib
from ployz.zfs.core import check, enc, ensure_init
from ployz.zfs.datasets import get
from ployz.zfs.errors import (
    DESTROY_SNAPSHOT_ERRORS,
    HOLD_ERRORS,
    RELEASE_ERRORS,
    DatasetNotFound,
    ZFSError,
    translate,
)
from ployz.zfs.names import dataset_of, short_name
from ployz.zfs.nvlist import NvValue, nvlist_in, nvlist_out, to_dict
from ployz.zfs.program import U64, run_readonly

# Lists snapshots with guid and createtxg in one read-only channel program.
_LIST_SNAPSHOTS = """
args = ...
local out = {}
for snap in zfs.list.snapshots(args["dataset"]) do
    out[snap] = {guid = zfs.get_prop(snap, "guid"), createtxg = zfs.get_prop(snap, "createtxg")}
end
return out
"""


@dataclass(frozen=True, order=True)
class Snapshot:
    """A snapshot or bookmark: full name (``ds@snap`` or ``ds#mark``), guid and creation txg."""

    createtxg: int
    name: str
    guid: int

    @property
    def short(self) -> str:
        return short_name(self.name)


def _raise_from_errlist(rc: int, errlist: dict[str, int], fallback: str,
                        table: dict[int, tuple[type[ZFSError], str]] | None, action: str) -> None:
    # Some calls (release) report per-name failures in the errlist with a zero return code.
    for name, err in errlist.items():
        raise translate(err, name, table, action)
    if rc != 0:
        raise translate(rc, fallback, table, action)


def snapshot(names: Iterable[str], props: Mapping[str, NvValue] | None = None) -> None:
    """Takes all ``names`` (``ds@snap``) in one transaction group: atomic across datasets of one
    pool."""
    ensure_init()
    names = list(names)
    with nvlist_in(dict.fromkeys(names)) as snaps, nvlist_in(props) as nvprops, \
            nvlist_out() as errs:
        rc = lib.lzc_snapshot(snaps, nvprops, errs)
        _raise_from_errlist(rc, to_dict(errs[0]), names[0], None, "snapshot")


def destroy_snapshots(names: Iterable[str], defer: bool = False) -> None:
    """Destroys snapshots; with ``defer`` a held snapshot is marked and goes when released."""
    ensure_init()
    names = list(names)
    if not names:
        return
    with nvlist_in(dict.fromkeys(names)) as snaps, nvlist_out() as errs:
        rc = lib.lzc_destroy_snaps(snaps, int(defer), errs)
        _raise_from_errlist(rc, to_dict(errs[0]), names[0], DESTROY_SNAPSHOT_ERRORS,
                            "destroy snapshot")


def bookmark(snapshot: str, bookmark: str) -> None:
    """Creates ``ds#mark`` from ``ds@snap`` (or from another bookmark)."""
    ensure_init()
    with nvlist_in({bookmark: snapshot}) as marks, nvlist_out() as errs:
        rc = lib.lzc_bookmark(marks, errs)
        _raise_from_errlist(rc, to_dict(errs[0]), bookmark, None, "bookmark")


def bookmarks(dataset: str) -> list[Snapshot]:
    """The dataset's bookmarks, oldest first."""
    ensure_init()
    with nvlist_in({"guid": None, "createtxg": None}) as wanted, nvlist_out() as out:
        check(lib.lzc_get_bookmarks(enc(dataset), wanted, out), dataset, action="list bookmarks")
        found = to_dict(out[0])
    return sorted(Snapshot(name=f"{dataset}#{short}", guid=props["guid"]["value"],
                           createtxg=props["createtxg"]["value"])
                  for short, props in found.items())


def destroy_bookmarks(names: Iterable[str]) -> None:
    ensure_init()
    names = list(names)
    with nvlist_in(dict.fromkeys(names)) as marks, nvlist_out() as errs:
        rc = lib.lzc_destroy_bookmarks(marks, errs)
        _raise_from_errlist(rc, to_dict(errs[0]), names[0] if names else "", None,
                            "destroy bookmark")


def snapshots(dataset: str) -> list[Snapshot]:
    """The dataset's snapshots, oldest (lowest createtxg) first."""
    listed = run_readonly(dataset, _LIST_SNAPSHOTS, {"dataset": dataset}, "list snapshots")
    return sorted(Snapshot(name=name, guid=props["guid"] % U64, createtxg=props["createtxg"])
                  for name, props in (listed or {}).items())


def guid_of(name: str) -> int:
    """The guid of a snapshot, or of a bookmark (which property reads do not reach)."""
    if "#" in name:
        for mark in bookmarks(dataset_of(name)):
            if mark.name == name:
                return mark.guid
        raise DatasetNotFound(0, name, "bookmark does not exist")
    return int(get(name, ["guid"])["guid"])


def hold(snapshots_to_tags: Mapping[str, str]) -> None:
    """Places user holds (persistent, survive reboots) so that the snapshots cannot be
    destroyed: the guard on an incremental base while a migration needs it."""
    ensure_init()
    with nvlist_in(dict(snapshots_to_tags)) as holds, nvlist_out() as errs:
        rc = lib.lzc_hold(holds, -1, errs)
        _raise_from_errlist(rc, to_dict(errs[0]), next(iter(snapshots_to_tags), ""),
                            HOLD_ERRORS, "hold")


def release(snapshots_to_tags: Mapping[str, Iterable[str] | str]) -> None:
    """Releases holds: ``{snapshot: tag}`` or ``{snapshot: [tags]}``."""
    ensure_init()
    spec = {snap: dict.fromkeys([tags] if isinstance(tags, str) else list(tags))
            for snap, tags in snapshots_to_tags.items()}
    with nvlist_in(spec) as holds, nvlist_out() as errs:
        rc = lib.lzc_release(holds, errs)
        _raise_from_errlist(rc, to_dict(errs[0]), next(iter(spec), ""), RELEASE_ERRORS,
                            "release")


def holds(snapshot: str) -> dict[str, int]:
    """The snapshot's holds: tag -> creation time (seconds since the epoch)."""
    ensure_init()
    with nvlist_out() as out:
        check(lib.lzc_get_holds(enc(snapshot), out), snapshot, action="list holds")
        return to_dict(out[0])


def rollback(dataset: str, snapshot: str | None = None) -> str:
    """Rolls ``dataset`` back to its most recent snapshot (or to ``snapshot``, which must be the
    most recent) and returns the snapshot's name."""
    ensure_init()
    if snapshot is not None:
        check(lib.lzc_rollback_to(enc(dataset), enc(snapshot)), dataset, action="rollback")
        return snapshot
    buf = ffi.new("char[]", 512)
    check(lib.lzc_rollback(enc(dataset), buf, 512), dataset, action="rollback")
    name: bytes = ffi.string(buf)
    return name.decode()
