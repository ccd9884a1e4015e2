"""Failures that must end a transfer cleanly and say precisely what went wrong.

- A whole-stream checksum mismatch can not be fixed by resending: it ends the transfer at once,
  not after the retries. A relay can not cause one under protocol v2 (every frame is
  authenticated), so it is produced by a sender whose source changed under a resume, and by a
  test peer holding the keys that sends a wrong END.
- A receiver that runs out of disk space fails, leaves its partial file at its durable length
  (whole frames), and says how much more space it needs.
- A control message with the wrong sequence number, a data frame at the wrong offset and a
  control frame whose two lengths differ are refused with messages that say so, not with a
  message about some other field.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from ployz._xfer import frame_checksum
from ployz.transfer.errors import TransferError
from ployz.transfer.faults import failure_from
from ployz.transfer.files import FileSource
from ployz.transfer.sender import RetryPolicy, Sender
from tests.host.transfer.peer import Peer
from tests.host.transfer.relay import (
    FLAG_CONTROL,
    UNSEALED,
    Frame,
    Plan,
    Rules,
    chain_checksum,
    message_type,
)
from tests.host.transfer.transfer_cli import retry_args, wait_for_durable
from tests.host.transfer.transfer_data import make_data, write_data

FRAME = 64 * 1024
MiB = 1 << 20
SEND = ("--codec", "none", "--frame-size", str(FRAME), "--json")
STREAM_CHECKSUM = r"(?i)whole-stream|stream checksum|stream_checksum"


def test_a_source_changed_under_a_resume_ends_at_once(tmp_path: Path, cli) -> None:
    """The sender is killed; its file changes in place (mtime kept, so the re-run is the same
    transfer) where the receiver already holds it. The re-run hashes the changed prefix, so
    its END can not match what the receiver holds: a mismatch that no retry can fix."""
    src = write_data(tmp_path / "src", "random", 64 * FRAME)
    dst = tmp_path / "dst"
    receiver = cli.receive(dst, "--json")
    # with these pauses, retrying would take half a minute or more
    args = (*SEND, "--bwlimit", "1M", *retry_args(5, backoff=3.0))
    first = cli.send(src, receiver.address, *args)
    wait_for_durable(dst, first, 8 * FRAME)
    first.kill()
    stat = src.stat()
    with src.open("r+b") as out:
        out.write(b"changed in place")
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    again = cli.send(src, receiver.address, *args)
    assert again.wait(20) != 0
    assert again.stdout == ""
    assert re.search(STREAM_CHECKSUM, again.stderr), again.stderr
    assert "attempts" not in again.stderr, again.stderr
    assert receiver.wait(15) != 0
    assert not dst.exists()


def test_a_wrong_end_from_an_authenticated_peer_is_not_retryable(tmp_path: Path,
                                                                 start_receiver,
                                                                 signing_key) -> None:
    data = make_data("mixed", 5 * FRAME + 99)
    dst = tmp_path / "dst"
    receiver = start_receiver(dst)
    with Peer(receiver.address, signing_key, stream={"kind": "file", "size": len(data)},
              frame_size=FRAME) as peer:
        assert peer.handshake()["type"] == "accept"
        sums = []
        for at in range(0, len(data), FRAME):
            peer.send_data(at, data[at:at + FRAME])
            sums.append(frame_checksum(data[at:at + FRAME], at))
        peer.send_end(len(data), chain_checksum(sums) ^ 0x5A5A)
        failure = peer.recv()
    assert failure["type"] == "failure", failure
    assert failure["code"] == "stream_checksum", failure
    assert not failure_from(failure["code"], failure.get("message")).retryable
    assert not dst.exists()


def _amounts(text: str) -> list[int]:
    """Byte amounts a message names: plain numbers of bytes, or with a binary or decimal unit."""
    units = {"": 1, "b": 1, "bytes": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
             "kb": 10**3, "mb": 10**6, "gb": 10**9}
    found = re.findall(r"(\d+(?:\.\d+)?)\s*(bytes|[kmg]i?b|b)?\b", text, re.IGNORECASE)
    return [int(float(number) * units[unit.lower()]) for number, unit in found]


def test_a_full_disk_fails_with_the_space_needed(tmp_path: Path, tmpfs, cli) -> None:
    size, frame = 64 * MiB, MiB
    small = tmpfs(32 * MiB)
    src = write_data(tmp_path / "src", "random", size)
    dst = small / "dst"
    receiver = cli.receive(dst)
    sender = cli.send(src, receiver.address, "--codec", "none", "--frame-size", frame,
                      *retry_args(3))
    assert sender.wait(60) != 0
    assert receiver.wait(30) != 0
    for side in (sender, receiver):
        line = next((line for line in side.stderr.splitlines()
                     if re.search(r"(?i)space", line)), None)
        assert line, side.stderr
        # what is missing: the stream less what fitted, within a few frames
        assert any(size - 32 * MiB - 4 * frame <= n <= size for n in _amounts(line)), line
    partial = dst.with_name("dst.partial")
    assert partial.exists()
    held = partial.stat().st_size
    assert 0 < held <= 32 * MiB and held % frame == 0, held
    with src.open("rb") as source:
        assert partial.read_bytes() == source.read(held)
    assert not dst.exists()


def test_a_misnumbered_control_message_is_refused_precisely(tmp_path: Path, cli, start_relay,
                                                            data_file) -> None:
    """The relay renumbers the COMMIT (sequence 1 of its direction) as 5, its checksum fixed:
    the sender refuses it, saying which number it got and which it expected."""
    def renumber(frame: Frame) -> bytes:
        if message_type("commit")(frame):
            frame = frame.replace(offset=5, checksum=frame_checksum(frame.payload, 5))
        return frame.pack()

    src, dst = data_file("text", 4 * FRAME), tmp_path / "dst"
    receiver = cli.receive(dst, "--linger", 2)
    relay = start_relay(receiver.host_port, repeat=Plan(down=Rules(rewrite=renumber)))
    sender = cli.send(src, relay.address, *SEND, *retry_args(2))
    assert sender.wait(60) != 0
    assert sender.stdout == ""
    assert re.search(r"(?i)(numbered|sequence)\D*5\b.*expected\D*1\b", sender.stderr) or \
        re.search(r"(?i)expected\D*1\b.*(numbered|sequence)\D*5\b", sender.stderr), sender.stderr
    assert receiver.wait(30) is not None


def test_a_data_frame_at_the_wrong_offset_is_refused_precisely(tmp_path: Path,
                                                               start_receiver,
                                                               signing_key) -> None:
    """Only a peer holding the keys can seal a frame at another offset (a relay moving one
    fails the tag, see the tampering tests): a sender bug, reported as what it is."""
    data = make_data("text", 8 * FRAME)
    dst = tmp_path / "dst"
    receiver = start_receiver(dst)
    with Peer(receiver.address, signing_key, stream={"kind": "file", "size": len(data)},
              frame_size=FRAME) as peer:
        assert peer.handshake()["type"] == "accept"
        peer.send_data(3 * FRAME, data[3 * FRAME:4 * FRAME])
        failure = peer.recv()
    assert failure["type"] == "failure", failure
    message = failure["message"]
    assert "offset" in message and re.search(rf"\b{3 * FRAME}\b", message), failure
    assert re.search(r"(?i)expected\D*0\b", message), failure
    assert not re.search(r"(?i)tag|integrity", message), failure
    assert not dst.exists()


def _no_flags_story(text: str) -> None:
    assert re.search(r"(?i)length", text), text
    assert "flags 0x4" not in text, text


def test_a_control_message_with_differing_lengths_is_named_for_them(tmp_path: Path, cli,
                                                                    start_relay,
                                                                    data_file) -> None:
    """The relay makes the COMMIT's raw length one more than its wire length."""
    def lengthen(frame: Frame) -> bytes:
        if message_type("commit")(frame):
            frame = frame.replace(raw_len=frame.raw_len + 1)
        return frame.pack()

    src, dst = data_file("text", 4 * FRAME), tmp_path / "dst"
    receiver = cli.receive(dst, "--linger", 2)
    relay = start_relay(receiver.host_port, repeat=Plan(down=Rules(rewrite=lengthen)))
    sender = cli.send(src, relay.address, *SEND, *retry_args(2))
    assert sender.wait(60) != 0
    _no_flags_story(sender.stderr)
    assert receiver.wait(30) is not None


def test_a_hello_with_differing_lengths_is_refused_for_them(tmp_path: Path, start_receiver,
                                                            signing_key, caplog) -> None:
    """The receiver may answer a malformed HELLO with a REJECT or just close; either way what
    it says (or logs) names the lengths."""
    caplog.set_level(logging.WARNING, logger="ployz.transfer")
    receiver = start_receiver(tmp_path / "dst")
    reply = None
    with Peer(receiver.address, signing_key, stream={"kind": "file", "size": 1},
              frame_size=FRAME) as peer, contextlib.suppress(OSError, EOFError):
        reply = peer.handshake(change=lambda hello: hello.replace(raw_len=hello.raw_len + 1))
    if reply is not None:
        assert reply["type"] == "reject", reply
        _no_flags_story(reply["message"])
    deadline = time.monotonic() + 10
    while not [r for r in caplog.records if "hello" in r.getMessage().lower()]:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    _no_flags_story(caplog.text)


def test_an_info_with_differing_lengths_fails_the_sender_for_them(tmp_path: Path, data_file,
                                                                  signing_key) -> None:
    """A receiver (here a fake one) whose INFO frame says two different lengths."""
    payload = json.dumps({"type": "info", "protocol": 2, "target": {"kind": "file",
                                                                    "name": str(tmp_path)},
                          "kx": "A" * 43 + "="}, sort_keys=True, separators=(",", ":")).encode()
    info = Frame(FLAG_CONTROL, 0, len(payload), len(payload) + 1, 0,
                 frame_checksum(payload, 0), UNSEALED, payload)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            with conn, contextlib.suppress(OSError):  # the sender may hang up with a reset
                conn.sendall(info.pack())
                conn.recv(1 << 16)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with pytest.raises(TransferError) as failure:
            Sender(FileSource(data_file("text", 100)), listener.getsockname(), key=signing_key,
                   retry=RetryPolicy(attempts=1)).send()
        thread.join(10)
    error: BaseException | None = failure.value
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    _no_flags_story(" / ".join(messages))
