"""Send, receive, resume and abort against the real kernel module, cross-checked with the CLI."""

from __future__ import annotations

import filecmp
import hashlib
from pathlib import Path

import pytest

from ployz import zfs
from tests.zfs.zfshelpers import send_receive, sh, transfer, write_file

MiB = 1 << 20


def tree_digest(root: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture
def pools(pool_factory) -> tuple[str, str]:
    return pool_factory(), pool_factory()


@pytest.fixture
def source(pools: tuple[str, str]) -> str:
    fs = f"{pools[0]}/src"
    zfs.create(fs)
    zfs.mount(fs, f"/run/{fs}")
    write_file(f"/run/{fs}/one", 3 * MiB, seed=1)
    write_file(f"/run/{fs}/two", 64 * 1024, seed=2)
    sh("sync")
    zfs.snapshot([f"{fs}@s1"])
    return fs


def mounted(dataset: str) -> str:
    zfs.mount(dataset, f"/run/{dataset}")
    return f"/run/{dataset}"


def test_full_send_receive_same_content_and_guid(pools: tuple[str, str], source: str) -> None:
    target = f"{pools[1]}/dst"
    transfer(f"{source}@s1", f"{target}@s1")
    assert zfs.get(f"{target}@s1", ["guid"]) == zfs.get(f"{source}@s1", ["guid"])
    assert tree_digest(mounted(target)) == tree_digest(f"/run/{source}")


def test_incremental_from_snapshot_and_from_bookmark(pools: tuple[str, str], source: str) -> None:
    target = f"{pools[1]}/dst"
    transfer(f"{source}@s1", f"{target}@s1")
    write_file(f"/run/{source}/three", MiB, seed=3)
    sh("sync")
    zfs.snapshot([f"{source}@s2"])
    transfer(f"{source}@s2", f"{target}@s2", base=f"{source}@s1")
    # The base snapshot may go once a bookmark stands in for it.
    zfs.bookmark(f"{source}@s2", f"{source}#s2")
    zfs.destroy_snapshots([f"{source}@s2"])
    write_file(f"/run/{source}/four", MiB, seed=4)
    sh("sync")
    zfs.snapshot([f"{source}@s3"])
    transfer(f"{source}@s3", f"{target}@s3", base=f"{source}#s2")
    assert [s.guid for s in zfs.snapshots(target)][-1] == zfs.get(f"{source}@s3",
                                                                   ["guid"])["guid"]
    assert tree_digest(mounted(target)) == tree_digest(f"/run/{source}")


def test_send_space_estimates_the_stream(pools: tuple[str, str], source: str) -> None:
    estimate = zfs.send_space(f"{source}@s1")
    sent = bytearray()

    def count(fd: int) -> None:
        import os
        while chunk := os.read(fd, 1 << 16):
            sent.extend(chunk)

    assert not send_receive(lambda fd: zfs.send(f"{source}@s1", fd), count)
    assert 0.8 * len(sent) <= estimate <= 1.2 * len(sent)


def test_interrupted_receive_resumes_from_token(pools: tuple[str, str], source: str) -> None:
    target = f"{pools[1]}/dst"
    total = zfs.send_space(f"{source}@s1")
    with pytest.raises(zfs.StreamTruncated):
        send_receive(lambda fd: zfs.send(f"{source}@s1", fd),
                     lambda fd: zfs.receive(f"{target}@s1", fd), cut_after=total // 2)
    token = zfs.resume_token(target)
    assert token is not None
    assert token.toname == f"{source}@s1"
    assert token.toguid == zfs.get(f"{source}@s1", ["guid"])["guid"]
    assert token.fromguid == 0 and token.bytes > 0
    cli_view = sh("zfs", "send", "-nv", "-t", token.text)
    for field in ("object", "offset", "bytes", "toguid"):
        assert f"{field} = {getattr(token, field):#x}" in cli_view
    assert f"toname = {token.toname}" in cli_view
    assert not send_receive(lambda fd: zfs.send_resume(token, fd),
                            lambda fd: zfs.receive(f"{target}@s1", fd))
    assert zfs.resume_token(target) is None
    assert zfs.get(f"{target}@s1", ["guid"]) == zfs.get(f"{source}@s1", ["guid"])
    assert tree_digest(mounted(target)) == tree_digest(f"/run/{source}")


def test_abort_receive_clears_full_and_incremental_state(pools: tuple[str, str],
                                                         source: str) -> None:
    target = f"{pools[1]}/dst"
    cut = zfs.send_space(f"{source}@s1") // 2
    with pytest.raises(zfs.StreamTruncated):
        send_receive(lambda fd: zfs.send(f"{source}@s1", fd),
                     lambda fd: zfs.receive(f"{target}@s1", fd), cut_after=cut)
    zfs.abort_receive(target)
    assert not zfs.exists(target)

    transfer(f"{source}@s1", f"{target}@s1")
    write_file(f"/run/{source}/big", 4 * MiB, seed=5)
    sh("sync")
    zfs.snapshot([f"{source}@s2"])
    cut = zfs.send_space(f"{source}@s2", f"{source}@s1") // 2
    with pytest.raises(zfs.StreamTruncated):
        send_receive(lambda fd: zfs.send(f"{source}@s2", fd, base=f"{source}@s1"),
                     lambda fd: zfs.receive(f"{target}@s2", fd), cut_after=cut)
    token = zfs.resume_token(target)
    assert token is not None and token.fromguid == zfs.get(f"{source}@s1", ["guid"])["guid"]
    zfs.abort_receive(target)
    assert zfs.resume_token(target) is None
    assert [s.short for s in zfs.snapshots(target)] == ["s1"]
    with pytest.raises(zfs.NoResumableReceive):
        zfs.abort_receive(target)


def test_raw_send_of_encrypted_dataset(pools: tuple[str, str], tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    secret = f"{pools[0]}/secret"
    sh("zfs", "create", "-o", "encryption=on", "-o", "keyformat=raw",
       "-o", f"keylocation=file://{key}", "-o", f"mountpoint=/run/{secret}", secret)
    write_file(f"/run/{secret}/data", MiB, seed=9)
    sh("sync")
    zfs.snapshot([f"{secret}@s1"])
    target = f"{pools[1]}/secret"
    transfer(f"{secret}@s1", f"{target}@s1", raw=True)
    assert zfs.get(f"{target}@s1", ["guid"]) == zfs.get(f"{secret}@s1", ["guid"])
    assert sh("zfs", "get", "-Ho", "value", "keystatus", target).strip() == "unavailable"
    sh("zfs", "load-key", "-L", f"file://{key}", target)
    assert filecmp.cmp(f"{mounted(target)}/data", f"/run/{secret}/data", shallow=False)


def test_incremental_into_a_target_without_the_base(pools: tuple[str, str], source: str) -> None:
    zfs.snapshot([f"{source}@s2"])
    target = f"{pools[1]}/other"
    zfs.create(target)
    zfs.snapshot([f"{target}@unrelated"])
    with pytest.raises(zfs.IncrementalBaseMismatch):
        transfer(f"{source}@s2", f"{target}@s2", base=f"{source}@s1", force=True)


def test_send_from_a_base_that_is_not_an_ancestor(pools: tuple[str, str], source: str) -> None:
    other = f"{pools[0]}/other"
    zfs.create(other)
    zfs.snapshot([f"{other}@x"])
    with pytest.raises(zfs.IncrementalBaseMismatch):
        zfs.send_space(f"{source}@s1", f"{other}@x")


def test_modified_destination_is_refused(pools: tuple[str, str], source: str) -> None:
    target = f"{pools[1]}/dst"
    transfer(f"{source}@s1", f"{target}@s1")
    write_file(f"{mounted(target)}/scribble", 4096)
    sh("sync")
    zfs.unmount(target)
    zfs.snapshot([f"{source}@s2"])
    with pytest.raises(zfs.DestinationModified) as info:
        transfer(f"{source}@s2", f"{target}@s2", base=f"{source}@s1")
    assert info.value.name == f"{target}@s2"
    transfer(f"{source}@s2", f"{target}@s2", base=f"{source}@s1", force=True)


def test_truncated_stream_without_resume_leaves_nothing(pools: tuple[str, str],
                                                        source: str) -> None:
    target = f"{pools[1]}/dst"
    with pytest.raises(zfs.StreamTruncated):
        send_receive(lambda fd: zfs.send(f"{source}@s1", fd),
                     lambda fd: zfs.receive(f"{target}@s1", fd, resumable=False),
                     cut_after=100_000)
    assert not zfs.exists(target)


def test_garbage_stream_is_a_bad_stream(pools: tuple[str, str]) -> None:
    import os

    def garbage(fd: int) -> None:
        os.write(fd, os.urandom(64 * 1024))

    with pytest.raises(zfs.BadStream):
        send_receive(garbage, lambda fd: zfs.receive(f"{pools[1]}/junk@s", fd))
    assert not zfs.exists(f"{pools[1]}/junk")
