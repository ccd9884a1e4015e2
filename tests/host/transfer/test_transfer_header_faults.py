"""Damage to a frame header, and transfers that end fatally.

A header is what tells the receiver how to follow the stream, so a damaged one can not be
trusted for anything, its lengths least of all: a byte flipped in any field of a data frame's or
the END frame's header costs the connection, and the sender resumes to a byte-identical file.
When a transfer can not go on (the source vanished, or the attempts ran out), the sender says so
(ABORT) and both sides exit non-zero within seconds instead of the receiver waiting forever.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.host.transfer.relay import (
    Forger,
    Match,
    Plan,
    Rules,
    data_frame,
    end_frame,
    flip_header_byte,
)
from tests.host.transfer.transfer_cli import retry_args, wait_for_durable
from tests.host.transfer.transfer_data import assert_only_source_bytes, same_bytes, write_data

FRAME = 64 * 1024
SEND = ("--codec", "none", "--frame-size", str(FRAME), "--json")
# a lengthened frame leaves the receiver waiting for bytes that never come: its idle timeout
# ends that connection
RECEIVE = ("--idle-timeout", "3", "--json")
FIELDS = {  # header byte flipped, by field (all little-endian: byte 0 is the lowest)
    "magic": 0, "flags": 4, "reserved": 6, "wire_len": 8, "wire_len-high": 11, "raw_len": 12,
    "offset": 16, "offset-high": 23, "checksum": 24, "tag": 32, "tag-last": 47,
}
FRAMES: dict[str, Match] = {"data": data_frame(2), "end": end_frame}
ENDED = 15  # seconds: both sides are gone well within this once the transfer is given up


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("frame", FRAMES)
def test_a_flipped_header_byte_is_dropped_and_resumed(tmp_path: Path, cli, start_relay,
                                                      data_file, frame: str,
                                                      field: str) -> None:
    src, dst = data_file("mixed", 10 * FRAME + 321), tmp_path / "dst"
    receiver = cli.receive(dst, *RECEIVE)
    relay = start_relay(receiver.host_port, [flip_header_byte(FRAMES[frame], FIELDS[field])])
    sender = cli.send(src, relay.address, *SEND, *retry_args(4))
    assert sender.wait(60) == 0, sender.stderr
    assert receiver.wait(30) == 0, receiver.stderr
    assert relay.faults_done == 1
    assert same_bytes(src, dst)
    assert sender.summary()["resumes"] >= 1


def test_a_vanished_source_ends_both_sides(tmp_path: Path, cli, start_relay) -> None:
    """The first connection breaks; before the sender is back, its source is gone. Reopening it
    fails, which no retry can fix: the sender gives up and tells the receiver."""
    src = write_data(tmp_path / "src", "random", 40 * FRAME)
    dst = tmp_path / "dst"
    receiver = cli.receive(dst, *RECEIVE)
    relay = start_relay(receiver.host_port, [Plan(up=Rules(cut_after=data_frame(5)))])
    sender = cli.send(src, relay.address, *SEND, *retry_args(5, backoff=1.0))
    assert relay.connection(0).closed.wait(30)
    src.unlink()
    assert sender.wait(ENDED) != 0
    assert sender.stdout == ""
    assert str(src) in sender.stderr or "source" in sender.stderr, sender.stderr
    assert receiver.wait(ENDED) != 0
    assert re.search(r"(?i)abort|gave .* up|given up", receiver.stderr), receiver.stderr
    assert not dst.exists()


def test_a_source_that_shrinks_mid_stream_ends_both_sides(tmp_path: Path, cli) -> None:
    """The file is truncated while it is being sent: the stream can not be what the HELLO
    announced, and nothing of it may be committed."""
    src = write_data(tmp_path / "src", "random", 400 * FRAME)
    dst = tmp_path / "dst"
    receiver = cli.receive(dst, *RECEIVE)
    sender = cli.send(src, receiver.address, *SEND, "--bwlimit", "4M", *retry_args(3))
    wait_for_durable(dst, sender, 8 * FRAME)
    os.truncate(src, 100 * FRAME)
    assert sender.wait(ENDED * 2) != 0
    assert sender.stdout == ""
    assert receiver.wait(ENDED) != 0
    assert not dst.exists()


def test_running_out_of_attempts_ends_both_sides(tmp_path: Path, cli, start_relay,
                                                 data_file) -> None:
    """--retries 1 and a forged frame: the one attempt fails its tag, and that is the end of
    it on both sides, not a receiver waiting for a sender that will not come back."""
    src, dst = data_file("mixed", 10 * FRAME), tmp_path / "dst"
    receiver = cli.receive(dst, *RECEIVE)
    relay = start_relay(receiver.host_port, repeat=Plan(up=Forger().rules()))
    sender = cli.send(src, relay.address, *SEND, "--retries", "1")
    assert sender.wait(ENDED) != 0
    assert re.search(r"(?i)integrity|authenticat", sender.stderr), sender.stderr
    assert receiver.wait(ENDED) != 0
    assert re.search(r"(?i)integrity|authenticat", receiver.stderr), receiver.stderr
    assert_only_source_bytes(src, dst)
    assert not dst.exists()
