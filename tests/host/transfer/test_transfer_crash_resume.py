"""A sender killed mid-stream (SIGKILL: no ABORT, no goodbye) and simply run again resumes where
the receiver's durable data ends, whether the receiver kept running or was restarted on the same
file: the transfer id is derived from the source and the destination, so re-running the same
command is the whole recovery procedure."""

from __future__ import annotations

import pytest

from tests.host.transfer.transfer_cli import wait_for_durable
from tests.host.transfer.transfer_data import same_bytes, write_data

MiB = 1 << 20
SIZE = 256 * MiB
# at 20 MB/s the stream lasts about 13 s: a kill after the first few MiB is mid-stream
SEND = ("--bwlimit", "20M", "--json")


@pytest.mark.parametrize("restart_receiver", [False, True],
                         ids=["receiver-kept", "receiver-restarted"])
def test_a_killed_sender_run_again_resumes(tmpfs, cli, restart_receiver: bool) -> None:
    root = tmpfs(2 * SIZE + 64 * MiB)  # in memory: the disk does not set the pace
    src, dst = root / "src", root / "dst"
    write_data(src, "random", SIZE, seed=3)
    receiver = cli.receive(dst, "--json")
    first = cli.send(src, receiver.address, *SEND)
    wait_for_durable(dst, first, 16 * MiB)
    first.kill()
    if restart_receiver:
        receiver.kill()
        receiver = cli.receive(dst, "--json", listen=receiver.address)

    again = cli.send(src, receiver.address, *SEND)
    assert again.wait(120) == 0, again.stderr
    assert receiver.wait(30) == 0, receiver.stderr
    summary = again.summary()
    assert summary["resumed_bytes"] > 0
    assert summary["wire_bytes"] < SIZE
    assert summary["bytes"] == SIZE
    assert same_bytes(src, dst)
    assert summary["committed"] == receiver.summary()["committed"]
    assert summary["transfer_id"] == receiver.summary()["transfer_id"]
