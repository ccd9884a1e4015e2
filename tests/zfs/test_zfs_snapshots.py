"""Snapshots, bookmarks, holds, rollback and properties against the real kernel module."""

from __future__ import annotations

import os

import pytest

from ployz import zfs
from ployz.agent.errors import OutsidePool
from ployz.agent.methods.zfs_ops import ZFSMethods
from tests.zfs.zfshelpers import sh, write_file


@pytest.fixture
def fs(pool: str) -> str:
    name = f"{pool}/data"
    zfs.create(name)
    zfs.mount(name, f"/run/{name}")
    return name


def test_snapshot_is_atomic_across_datasets(pool: str) -> None:
    zfs.create(f"{pool}/a")
    zfs.create(f"{pool}/b")
    zfs.snapshot([f"{pool}/a@s1", f"{pool}/b@s1"])
    txg_a = zfs.get(f"{pool}/a@s1", ["createtxg"])["createtxg"]
    txg_b = zfs.get(f"{pool}/b@s1", ["createtxg"])["createtxg"]
    assert txg_a == txg_b
    assert zfs.exists(f"{pool}/a@s1") and zfs.exists(f"{pool}/b@s1")


def test_snapshot_of_missing_dataset_names_it(pool: str) -> None:
    with pytest.raises(zfs.DatasetNotFound) as info:
        zfs.snapshot([f"{pool}/missing@s1"])
    assert info.value.name == f"{pool}/missing@s1"


def test_exists(fs: str) -> None:
    assert zfs.exists(fs)
    assert not zfs.exists(f"{fs}/nope")
    assert not zfs.exists(f"{fs}@nope")


def test_snapshots_sorted_with_guids_matching_the_cli(fs: str) -> None:
    for name in ("c", "a", "b"):
        write_file(f"/run/{fs}/{name}", 4096)
        zfs.snapshot([f"{fs}@{name}"])
    listed = zfs.snapshots(fs)
    assert [s.short for s in listed] == ["c", "a", "b"]
    assert [s.createtxg for s in listed] == sorted(s.createtxg for s in listed)
    for snap in listed:
        assert snap.guid == int(sh("zfs", "get", "-Hpo", "value", "guid", snap.name))


def test_snapshots_of_missing_dataset(pool: str) -> None:
    with pytest.raises(zfs.DatasetNotFound):
        zfs.snapshots(f"{pool}/missing")


def test_bookmark_carries_the_snapshot_guid(fs: str) -> None:
    zfs.snapshot([f"{fs}@s1"])
    zfs.bookmark(f"{fs}@s1", f"{fs}#m1")
    marks = zfs.bookmarks(fs)
    assert [m.name for m in marks] == [f"{fs}#m1"]
    assert marks[0].guid == zfs.get(f"{fs}@s1", ["guid"])["guid"]
    zfs.destroy_bookmarks([f"{fs}#m1"])
    assert zfs.bookmarks(fs) == []


def test_holds_block_destroy_until_released(fs: str) -> None:
    snap = f"{fs}@held"
    zfs.snapshot([snap])
    zfs.hold({snap: "ployz-test"})
    assert set(zfs.holds(snap)) == {"ployz-test"}
    with pytest.raises(zfs.SnapshotHeld) as info:
        zfs.destroy_snapshots([snap])
    assert info.value.name == snap
    with pytest.raises(zfs.HoldExists):
        zfs.hold({snap: "ployz-test"})
    zfs.destroy_snapshots([snap], defer=True)
    assert zfs.exists(snap)
    zfs.release({snap: "ployz-test"})
    assert not zfs.exists(snap)


def test_release_unknown_tag(fs: str) -> None:
    zfs.snapshot([f"{fs}@s"])
    with pytest.raises(zfs.HoldNotFound):
        zfs.release({f"{fs}@s": "nobody"})


def test_rollback_discards_changes(fs: str) -> None:
    zfs.snapshot([f"{fs}@before"])
    write_file(f"/run/{fs}/later", 1024)
    assert zfs.rollback(fs) == f"{fs}@before"
    assert not os.path.exists(f"/run/{fs}/later")


def test_get_properties(fs: str) -> None:
    write_file(f"/run/{fs}/blob", 1 << 20)
    sh("sync")
    zfs.snapshot([f"{fs}@s"])
    props = zfs.get(fs, ["guid", "createtxg", "used", "available", "referenced",
                         "receive_resume_token"])
    assert props["guid"] == int(sh("zfs", "get", "-Hpo", "value", "guid", fs))
    assert props["referenced"] >= 1 << 20
    assert props["available"] > 0
    assert props["receive_resume_token"] is None


def test_destroy_and_unmount(fs: str) -> None:
    assert zfs.mounts_of(fs) == [f"/run/{fs}"]
    zfs.destroy(fs)
    assert not zfs.exists(fs)
    assert zfs.mounts_of(fs) == []


def test_create_existing(fs: str) -> None:
    with pytest.raises(zfs.DatasetExists):
        zfs.create(fs)


def test_written_counts_a_write_of_this_moment_once_the_pool_is_synced(fs: str) -> None:
    zfs.snapshot([f"{fs}@s1"])
    write_file(f"/run/{fs}/fresh", 4 << 20, seed=7)  # no fsync: its txg is still open
    written = ZFSMethods(fs.split("/")[0]).written([fs])
    assert written >= 4 << 20
    assert written == int(sh("zfs", "get", "-Hpo", "value", "written", fs))


def test_written_is_refused_outside_the_agents_pool(fs: str) -> None:
    with pytest.raises(OutsidePool, match="other-pool"):
        ZFSMethods("other-pool").written([fs])


def test_sync_of_a_missing_pool_names_it() -> None:
    with pytest.raises(zfs.ZFSError) as info:
        zfs.sync("no-such-pool")
    assert info.value.name == "no-such-pool"


def test_bytes_written_counts_overwrites_that_written_misses_before_a_snapshot(fs: str) -> None:
    methods = ZFSMethods(fs.split("/")[0])
    write_file(f"/run/{fs}/ring", 64 << 10)
    before, size_before = methods.bytes_written([fs]), methods.written([fs])
    assert before is not None
    with open(f"/run/{fs}/ring", "r+b") as ring:
        for _ in range(32):  # 2 MiB written over the same 64 KiB
            ring.seek(0)
            ring.write(os.urandom(64 << 10))
            ring.flush()
    after = methods.bytes_written([fs])
    assert after is not None and after - before >= 2 << 20
    assert methods.written([fs]) - size_before < 1 << 20  # the whole dataset, as big as before


def test_bytes_written_of_an_unmounted_dataset_is_zero_and_of_a_missing_one_refused(
        pool: str) -> None:
    zfs.create(f"{pool}/quiet")
    methods = ZFSMethods(pool)
    assert methods.bytes_written([f"{pool}/quiet"]) == 0
    with pytest.raises(zfs.DatasetNotFound):
        methods.bytes_written([f"{pool}/missing"])
