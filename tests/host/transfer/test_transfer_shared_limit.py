"""A bandwidth limit shared by concurrent sends (those of one migration, or of one drain, all
leaving from one agent): together they keep to it, each delivers its whole stream, and the
agent keeps one limit per group only while the group's sends run.

Whether a send that ends passes its share on at once is a matter of speed, measured in
``bench.transfer.bench_loopback`` (two sends sharing a limit against each held to half)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz._xfer import HEADER_SIZE, RateLimit, StreamSender
from ployz.agent.context import AgentContext
from ployz.agent.methods.transfers import SharedLimits, TransferMethods
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.sender import Sender
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign
from tests.host.transfer.conftest import RunningReceiver

pytestmark = pytest.mark.host

FRAME = 256 << 10
BURST = 2.0 * (FRAME + HEADER_SIZE)


def test_two_sends_sharing_a_limit_keep_to_it_together_and_deliver_everything(
        tmp_path: Path, data_file: Callable[..., Path],
        start_receiver: Callable[..., RunningReceiver],
        signing_key: Ed25519PrivateKey) -> None:
    """8 MiB and 4 MiB under one 6 MB/s limit: they cannot end before the limit lets 12 MiB
    through (less what the bucket may hold; the frames' headers count too), where each under
    a limit of its own of that rate would be done in 1.4 s."""
    sources = [data_file("random", 8 << 20, seed=1), data_file("random", 4 << 20, seed=2)]
    limit = RateLimit(6e6, BURST)
    receivers = [start_receiver(tmp_path / f"out-{i}") for i in range(2)]
    results: dict[int, int] = {}

    def send(index: int) -> None:
        results[index] = Sender(FileSource(sources[index]), receivers[index].address,
                                key=signing_key, codec="none", frame_size=FRAME,
                                shared_limit=limit).send().bytes

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started

    assert results == {0: 8 << 20, 1: 4 << 20}
    for index, receiver in enumerate(receivers):
        receiver.result()
        assert (tmp_path / f"out-{index}").read_bytes() == sources[index].read_bytes()
    assert elapsed >= ((12 << 20) - BURST) / limit.rate


def test_a_sender_takes_either_a_limit_of_its_own_or_a_shared_one_its_frames_fit() -> None:
    shared = RateLimit(10e6, BURST)
    with pytest.raises(ValueError, match="no limit of its own"):
        StreamSender(FRAME, "none", bwlimit=5e6, shared=shared)
    with pytest.raises(ValueError, match="fit the shared burst"):
        StreamSender(4 * FRAME, "none", shared=shared)
    with pytest.raises(ValueError, match="positive rate"):
        RateLimit(0.0, BURST)


def test_the_agent_keeps_one_limit_per_group_while_its_sends_run() -> None:
    limits = SharedLimits()
    with limits.share("drain-1", 20e6) as first, limits.share("drain-1", 20e6) as second:
        with limits.share("deploy-7", 20e6) as other:
            assert first is second and other is not first
            assert limits.groups() == ["deploy-7", "drain-1"]
        assert limits.groups() == ["drain-1"]
    assert limits.groups() == []
    with limits.share("drain-1", 20e6) as again:
        assert again is not first  # a new round's sends start from an empty bucket


def test_an_agent_send_of_a_group_delivers_and_lets_go_of_the_group(
        tmp_path: Path, data_file: Callable[..., Path]) -> None:
    key = Ed25519PrivateKey.generate()
    source_file = data_file("random", 2 << 20)
    context = AgentContext(machine_id="machine-a", pool="tank", runtime=None,  # type: ignore[arg-type]
                           state=None, started_ms=0,  # type: ignore[arg-type]
                           address="127.0.0.1:0", trusted=(key.public_key(),))
    methods = TransferMethods(context, source_for=lambda snapshot, base: FileSource(source_file),
                              sink_for=lambda dataset, pool, props: FileSink(tmp_path / "copy"))
    secret = new_secret()
    address = methods.receive("t1", "tank/copy", secret=secret).address
    ticket = sign(Ticket("t1", Target("file", str(tmp_path / "copy")), time.time() + 60), key)
    sent = methods.send("t1", "tank/vol@s1", address, ticket, secret=secret, bwlimit=50e6,
                        limit_group="deploy-1")
    assert sent.bytes == 2 << 20
    assert methods.receive_wait("t1", timeout_s=10).state == "committed"
    assert (tmp_path / "copy").read_bytes() == source_file.read_bytes()
    assert methods.limits.groups() == []
