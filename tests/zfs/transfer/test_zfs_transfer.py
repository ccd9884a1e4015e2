"""ZFS through the transfer engine, between two real pools over loopback TCP: full,
incremental (from a snapshot and from a bookmark) and raw-encrypted streams arrive with the
sender's guid; a connection cut mid-stream resumes from the receive resume token; a stale token
is aborted, reported, and the receive starts over."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz import zfs
from ployz.transfer.receiver import Receiver, ReceiverTimeouts
from ployz.transfer.results import SendResult
from ployz.transfer.sender import RetryPolicy, Sender
from ployz.transfer.zfs_endpoints import ZfsSink, ZfsSource
from tests.host.transfer.relay import Relay, cut_at_byte
from tests.zfs.zfshelpers import send_receive, sh, write_file

MiB = 1 << 20
KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def pools(pool_factory) -> tuple[str, str]:
    return pool_factory(), pool_factory()


@pytest.fixture
def source(pools: tuple[str, str]) -> str:
    fs = f"{pools[0]}/src"
    zfs.create(fs)
    zfs.mount(fs, f"/run/{fs}")
    write_file(f"/run/{fs}/one", 6 * MiB, seed=1)
    sh("sync")
    zfs.snapshot([f"{fs}@s1"])
    return fs


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def run_transfer(listener: socket.socket, dataset: str, snapshot: str, *,
                 base: str | None = None, raw: bool = False,
                 via: tuple[str, int] | None = None, codec: str = "zstd",
                 props: dict[str, int | str] | None = None) -> SendResult:
    outcome: dict[str, object] = {}
    receiver = Receiver(listener, ZfsSink(dataset, props=props), KEY.public_key(),
                        timeouts=ReceiverTimeouts(handshake=10, idle=60, wait=120))

    def serve() -> None:
        try:
            outcome["result"] = receiver.serve()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        sent = Sender(ZfsSource(snapshot, base=base, raw=raw), via or listener.getsockname(),
                      key=KEY, codec=codec, frame_size=256 * 1024,
                      retry=RetryPolicy(attempts=5, initial_backoff=0.1)).send()
    finally:
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    return sent


def guid(name: str) -> int:
    return int(zfs.get(name, ["guid"])["guid"])


def test_full_then_incremental_from_snapshot_and_bookmark(pools, source, listener) -> None:
    """The full stream also sets the properties given to the sink (a moved volume's quota)."""
    target = f"{pools[1]}/dst"
    full = run_transfer(listener, target, f"{source}@s1", props={"quota": 64 * MiB})
    assert guid(f"{target}@s1") == guid(f"{source}@s1")
    assert zfs.get(target, ["quota"])["quota"] == 64 * MiB
    assert full.evidence["guid"] == guid(f"{source}@s1")
    assert full.evidence["snapshot"] == f"{target}@s1"
    # random data: zstd frames that do not shrink travel raw, from pipe to pipe by splice
    assert full.frames_spliced == full.frames_raw > 0

    write_file(f"/run/{source}/two", MiB, seed=2)
    sh("sync")
    zfs.snapshot([f"{source}@s2"])
    incremental = run_transfer(listener, target, f"{source}@s2", base="@s1", codec="none")
    assert guid(f"{target}@s2") == guid(f"{source}@s2") == incremental.evidence["guid"]
    assert incremental.bytes < full.bytes
    assert incremental.frames_spliced == incremental.frames_raw > 0
    assert zfs.get(target, ["quota"])["quota"] == 64 * MiB

    zfs.bookmark(f"{source}@s2", f"{source}#s2")
    zfs.destroy_snapshots([f"{source}@s2"])
    write_file(f"/run/{source}/three", MiB, seed=3)
    sh("sync")
    zfs.snapshot([f"{source}@s3"])
    run_transfer(listener, target, f"{source}@s3", base="#s2")
    assert guid(f"{target}@s3") == guid(f"{source}@s3")


def test_raw_encrypted_stream(pools, listener, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    secret = f"{pools[0]}/secret"
    sh("zfs", "create", "-o", "encryption=on", "-o", "keyformat=raw",
       "-o", f"keylocation=file://{key}", "-o", f"mountpoint=/run/{secret}", secret)
    write_file(f"/run/{secret}/data", 2 * MiB, seed=9)
    sh("sync")
    zfs.snapshot([f"{secret}@s1"])
    target = f"{pools[1]}/secret"
    sent = run_transfer(listener, target, f"{secret}@s1", raw=True)
    assert guid(f"{target}@s1") == guid(f"{secret}@s1") == sent.evidence["guid"]
    assert sh("zfs", "get", "-Ho", "value", "keystatus", target).strip() == "unavailable"


def test_connection_cut_mid_stream_resumes_from_the_token(pools, source, listener) -> None:
    target = f"{pools[1]}/dst"
    with Relay(listener.getsockname(), [cut_at_byte(3 * MiB)]) as relay:
        sent = run_transfer(listener, target, f"{source}@s1", via=relay.address, codec="none")
    assert relay.faults_done == 1
    assert sent.resumes == 1
    assert guid(f"{target}@s1") == guid(f"{source}@s1")
    assert zfs.resume_token(target) is None


def test_stale_token_is_aborted_reported_and_the_receive_restarts(pools, source,
                                                                  listener) -> None:
    target = f"{pools[1]}/dst"
    # a partial receive of another snapshot leaves a token that does not fit @s1
    write_file(f"/run/{source}/other", 2 * MiB, seed=4)
    sh("sync")
    zfs.snapshot([f"{source}@other"])
    with pytest.raises(zfs.StreamTruncated):
        send_receive(lambda fd: zfs.send(f"{source}@other", fd),
                     lambda fd: zfs.receive(f"{target}@other", fd), cut_after=MiB)
    stale = zfs.resume_token(target)
    assert stale is not None and stale.toguid == guid(f"{source}@other")

    sent = run_transfer(listener, target, f"{source}@s1")
    assert any("stale resume token" in notice for notice in sent.notices)
    assert guid(f"{target}@s1") == guid(f"{source}@s1")


def test_a_snapshot_already_received_commits_without_data(pools, source, listener) -> None:
    target = f"{pools[1]}/dst"
    first = run_transfer(listener, target, f"{source}@s1")
    again = run_transfer(listener, target, f"{source}@s1")
    assert again.bytes == 0 and again.frames_raw == again.frames_zstd == 0
    assert again.evidence["guid"] == first.evidence["guid"] == guid(f"{source}@s1")
