"""The receiver committed, but the sender never heard: the connection broke right after END, or
the COMMIT itself was lost. The sender reconnects, learns the committed outcome, and exits 0 with
the evidence; the receiver, which lingers for exactly this, answers the retry, takes the
sender's ACK and exits 0 too. A lost ACK leaves a receiver that lingers, then exits 0 (it
committed) without the sender ever retrying."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host.transfer.relay import Plan, Rules, end_frame, message_type
from tests.host.transfer.transfer_cli import retry_args
from tests.host.transfer.transfer_data import same_bytes, whole_stream_checksum

FRAME = 64 * 1024
SEND = ("--codec", "none", "--frame-size", str(FRAME), "--json", *retry_args(5))
LOST = {
    "reset after END": Plan(up=Rules(cut_after=end_frame, reset=True)),
    "COMMIT dropped, reset": Plan(down=Rules(cut_before=message_type("commit"), reset=True)),
    "COMMIT dropped, closed": Plan(down=Rules(cut_before=message_type("commit"))),
}


@pytest.mark.parametrize("lost", LOST)
def test_a_lost_commit_is_learned_on_reconnecting(tmp_path: Path, cli, start_relay,
                                                   data_file, lost: str) -> None:
    src, dst = data_file("mixed", 20 * FRAME + 77), tmp_path / "dst"
    receiver = cli.receive(dst, "--json", "--linger", 30)
    relay = start_relay(receiver.host_port, [LOST[lost]])
    sender = cli.send(src, relay.address, *SEND)
    assert sender.wait(60) == 0, sender.stderr
    assert receiver.wait(30) == 0, receiver.stderr
    assert "Traceback" not in receiver.stderr, receiver.stderr
    assert relay.faults_done == 1 and len(relay.connections) >= 2
    assert same_bytes(src, dst)
    sent, received = sender.summary(), receiver.summary()
    assert sent["committed"] == received["committed"]
    assert sent["committed"]["path"] == str(dst)
    assert sent["committed"]["checksum"] == whole_stream_checksum(src.read_bytes(), FRAME)
    if "COMMIT" in lost:  # the receiver had committed: the retry moved no data
        assert not [f for f in relay.frames() if f.connection > 0 and f.is_data]
    # (a reset right after END may reach the receiver before the frames it follows, and TCP
    # then discards what the receiver had not read: the retry resends those)


def test_a_lost_ack_leaves_the_receiver_lingering_then_done(tmp_path: Path, cli, start_relay,
                                                           data_file) -> None:
    src, dst = data_file("text", 5 * FRAME), tmp_path / "dst"
    receiver = cli.receive(dst, "--json", "--linger", 2)
    relay = start_relay(receiver.host_port,
                        [Plan(up=Rules(cut_before=message_type("ack"), reset=True))])
    sender = cli.send(src, relay.address, *SEND)
    assert sender.wait(60) == 0, sender.stderr
    assert receiver.wait(30) == 0, receiver.stderr
    assert "Traceback" not in receiver.stderr, receiver.stderr
    assert relay.faults_done == 1 and len(relay.connections) == 1
    assert same_bytes(src, dst)
    assert sender.summary()["committed"] == receiver.summary()["committed"]
