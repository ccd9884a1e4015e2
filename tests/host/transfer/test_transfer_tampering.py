"""An attacker on the path between ``transfer send`` and ``transfer receive`` (protocol v2).

Whatever it alters is never committed and never reported as success: a data frame's payload with
its checksums recomputed (the attack protocol v1 could not see), a data frame's header fields,
the END frame, the receiver's COMMIT. Altering one connection only costs a resume, and the file
arrives byte-identical; altering every connection ends the transfer on both sides, non-zero,
naming the failure, with no target file. With ``--encrypt`` the path sees no plaintext.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ployz._xfer import frame_checksum
from tests.host.transfer.relay import (
    DOWN,
    END,
    FLAG_ZSTD,
    UP,
    Forger,
    Frame,
    Match,
    Plan,
    Rules,
    chain_checksum,
    data_frame,
    message_type,
)
from tests.host.transfer.transfer_data import assert_only_source_bytes, make_data, same_bytes

FRAME = 64 * 1024
SIZE = 24 * FRAME + 1234
SEND = ("--codec", "none", "--frame-size", str(FRAME), "--json")
RECEIVE = ("--idle-timeout", "5", "--linger", "3", "--json")
INTEGRITY = r"(?i)integrity|authenticat"
# a damaged header may be refused for what it says before its tag is ever checked
HEADER_FAILURE = r"(?i)integrity|authenticat|framing|protocol|offset|length|flags"


def _data_header(which: Match, change: Callable[[Frame], Frame]) -> Plan:
    def rewrite(frame: Frame) -> bytes:
        return (change(frame) if frame.is_data and which(frame) else frame).pack()
    return Plan(up=Rules(rewrite=rewrite))


def _moved(frame: Frame) -> Frame:
    """The frame passed off as the next one, its checksum recomputed for that offset: a
    reordering that a checksum seeded with the offset alone can not see."""
    offset = frame.offset + FRAME
    return frame.replace(offset=offset, checksum=frame_checksum(frame.payload, offset))


def _shortened(frame: Frame) -> Frame:
    """One byte less, lengths and checksum consistent: the stream stays in step."""
    payload = frame.payload[:-1]
    return frame.replace(payload=payload, wire_len=len(payload), raw_len=len(payload),
                         checksum=frame_checksum(payload, frame.offset))


def _compressed(frame: Frame) -> Frame:
    return frame.replace(flags=frame.flags | FLAG_ZSTD)


def _end_chain(frame: Frame) -> bytes:
    """The END frame's whole-stream checksum replaced, its frame checksum fixed."""
    if not frame.is_end:
        return frame.pack()
    total, chain = END.unpack(frame.payload)
    payload = END.pack(total, chain ^ 1)
    return frame.replace(payload=payload,
                         checksum=frame_checksum(payload, frame.offset)).pack()


class Truncator:
    """Cuts the stream short: holds each data frame back until the next frame shows it was not
    the last, drops the last one, and rewrites END to the shorter length with the checksum
    chain of what it let through (across connections, as the receiver counts it)."""

    def __init__(self) -> None:
        self.held: Frame | None = None
        self.sums: dict[int, int] = {}

    def rules(self) -> Rules:
        return Rules(rewrite=self.rewrite)

    def rewrite(self, frame: Frame) -> bytes:
        held, self.held = self.held, None
        if held is not None and held.connection != frame.connection:
            held = None  # that connection broke with the frame still held
        if frame.is_data:
            self.held = frame
            if held is None:
                return b""
            self.sums[held.offset] = held.checksum
            return held.pack()
        if frame.is_end and held is not None:
            total = held.offset
            payload = END.pack(total, chain_checksum(self.sums[o] for o in sorted(self.sums)
                                                     if o < total))
            return frame.replace(payload=payload, offset=total,
                                 checksum=frame_checksum(payload, total)).pack()
        return (held.pack() if held else b"") + frame.pack()


def _commit(frame: Frame) -> bytes:
    """The receiver's COMMIT with another whole-stream checksum in its evidence, the frame's
    checksum fixed (an authenticated session sends control messages in the clear)."""
    message = frame.message()
    if not message_type("commit")(frame) or message is None:
        return frame.pack()
    checksum = str(message["evidence"]["checksum"]).encode()
    payload = frame.payload.replace(checksum, b"0" * len(checksum))
    return frame.replace(payload=payload,
                         checksum=frame_checksum(payload, frame.offset)).pack()


@dataclass(frozen=True)
class Tamper:
    """One attack: ``plan(which)`` builds a connection's plan, where ``which`` picks the data
    frame to alter; ``failure`` is what the failure's message must name."""

    plan: Callable[[Match], Plan]
    failure: str = INTEGRITY
    commits: bool = False  # the receiver commits the (intact) data before the attack shows


TAMPERS = {
    "data payload": Tamper(lambda which: Plan(up=Forger(target=which).rules())),
    "data offset": Tamper(lambda which: _data_header(which, _moved), HEADER_FAILURE),
    "data flags": Tamper(lambda which: _data_header(which, _compressed), HEADER_FAILURE),
    "data lengths": Tamper(lambda which: _data_header(which, _shortened), HEADER_FAILURE),
    "end checksum": Tamper(lambda which: Plan(up=Rules(rewrite=_end_chain))),
    "end truncated": Tamper(lambda which: Plan(up=Truncator().rules())),
    "commit": Tamper(lambda which: Plan(down=Rules(rewrite=_commit)), commits=True),
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.write_bytes(make_data("mixed", SIZE, seed=7))
    return path


@pytest.mark.parametrize("name", TAMPERS)
def test_tampering_with_one_connection_costs_a_resume(tmp_path: Path, cli, start_relay,
                                                      source: Path, name: str) -> None:
    dst = tmp_path / "dst"
    receiver = cli.receive(dst, *RECEIVE)
    relay = start_relay(receiver.host_port, [TAMPERS[name].plan(data_frame(3))])
    sender = cli.send(source, relay.address, *SEND, "--retries", "4", "--backoff", "0.05")
    assert sender.wait(60) == 0, sender.stderr
    assert receiver.wait(30) == 0, receiver.stderr
    assert relay.faults_done >= 1
    assert same_bytes(source, dst)
    assert sender.summary()["committed"] == receiver.summary()["committed"]
    assert len(relay.connections) >= 2


@pytest.mark.parametrize("name", TAMPERS)
def test_tampering_with_every_connection_fails_both_sides(tmp_path: Path, cli, start_relay,
                                                          source: Path, name: str) -> None:
    tamper = TAMPERS[name]
    dst = tmp_path / "dst"
    receiver = cli.receive(dst, *RECEIVE)
    relay = start_relay(receiver.host_port, repeat=tamper.plan(data_frame(0)))
    sender = cli.send(source, relay.address, *SEND, "--retries", "3", "--backoff", "0.05")
    assert sender.wait(60) != 0
    assert sender.stdout == "", "the sender reported success for altered data"
    assert re.search(tamper.failure, sender.stderr), sender.stderr
    status = receiver.wait(30)
    assert "Traceback" not in receiver.stderr, receiver.stderr
    assert_only_source_bytes(source, dst)
    if not tamper.commits:
        assert not dst.exists()
        assert status != 0
        assert re.search(tamper.failure, receiver.stderr), receiver.stderr
    assert relay.faults_done >= 3


@pytest.mark.parametrize("encrypt", [False, True])
def test_a_forged_payload_is_caught_with_and_without_encryption(
        tmp_path: Path, cli, start_relay, source: Path, encrypt: bool) -> None:
    dst = tmp_path / "dst"
    receiver = cli.receive(dst, *RECEIVE)
    forger = Forger(target=data_frame(2))
    relay = start_relay(receiver.host_port, [Plan(up=forger.rules())])
    flags = ("--encrypt",) if encrypt else ()
    sender = cli.send(source, relay.address, *SEND, *flags, "--retries", "4")
    assert sender.wait(60) == 0, sender.stderr
    assert receiver.wait(30) == 0, receiver.stderr
    assert forger.frames_forged == 1
    assert same_bytes(source, dst)
    assert sender.summary()["encrypted"] is encrypt
    assert sender.summary()["resumes"] >= 1


MARKER = b"<<ployz plaintext marker: only the two ends may read this line>>\n"


@pytest.mark.parametrize("encrypt", [False, True])
def test_the_path_sees_plaintext_only_without_encrypt(tmp_path: Path, cli, start_relay,
                                                      encrypt: bool) -> None:
    """The relay greps what it carried for a line repeated all through the file: without
    --encrypt it is there (the check can see it), with --encrypt it never is."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"".join(MARKER + make_data("random", 4000, seed) for seed in range(400)))
    receiver = cli.receive(dst, *RECEIVE)
    relay = start_relay(receiver.host_port, keep_bytes=True)
    flags = ("--encrypt",) if encrypt else ()
    sender = cli.send(src, relay.address, *SEND, *flags)
    assert sender.wait(60) == 0, sender.stderr
    assert receiver.wait(30) == 0, receiver.stderr
    assert same_bytes(src, dst)
    carried = relay.carried(UP)
    assert len(carried) > src.stat().st_size
    assert (MARKER in carried) is not encrypt
    assert MARKER not in relay.carried(DOWN)
    assert sender.summary()["encrypted"] is encrypt
    assert receiver.summary()["encrypted"] is encrypt
    if encrypt:  # no checksum of the plaintext travels either
        assert all(frame.checksum == 0 for frame in relay.frames(UP)
                   if not frame.is_control)
