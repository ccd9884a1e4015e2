"""The data path between pipes, as ZFS streams use it (``zfs send`` writes a pipe the sender
reads; the receiver writes a pipe ``zfs receive`` reads): raw frames move by splice(2) over a
real loopback TCP connection, byte-identical, and a frame whose checksum fails is never spliced
into the sink."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ployz._xfer import ERROR_KINDS, HEADER_SIZE, StreamReceiver, StreamSender
from tests.host.transfer.transfer_data import make_data

FRAME = 256 * 1024
KEY = bytes(range(32))  # the session key both ends of a run share
NOBODY = 65534


def feed(fd: int, data: bytes, chunk: int) -> None:
    """Writes ``data`` into a pipe ``chunk`` bytes at a time, then closes it (end of stream)."""
    try:
        for at in range(0, len(data), chunk):
            os.write(fd, data[at:at + chunk])
    finally:
        os.close(fd)


def drain(fd: int, out: bytearray) -> None:
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while block := pipe.read(1 << 20):
            out += block


@dataclass
class Outcome:
    send: tuple[int, int, str] = (0, 0, "")
    receive: tuple[int, int, str] = (0, 0, "")
    sink: bytearray = field(default_factory=bytearray)


@contextmanager
def loopback() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        yield client, server


def run_pipes(data: bytes, codec: str, chunk: int, relay: bool = False,
              flip_at: int | None = None, frame: int = FRAME,
              ) -> tuple[Outcome, StreamSender, StreamReceiver]:
    """Source pipe -> sender -> TCP -> receiver -> sink pipe. With ``relay`` the bytes pass a
    relay that flips the byte at wire offset ``flip_at``."""
    outcome = Outcome()
    sender = StreamSender(frame, codec)
    receiver = StreamReceiver(frame, codec != "none")
    src_read, src_write = os.pipe()
    sink_read, sink_write = os.pipe()
    with loopback() as (client, server), (loopback() if relay else _none()) as middle:
        threads = [threading.Thread(target=feed, args=(src_write, data, chunk)),
                   threading.Thread(target=drain, args=(sink_read, outcome.sink))]
        out_sock, in_sock = client, server
        if middle:  # client -> server -> flip -> middle[0] -> middle[1] -> receiver
            threads.append(threading.Thread(target=flip, args=(server, middle[0], flip_at)))
            in_sock = middle[1]
        for thread in threads:
            thread.start()

        def send() -> None:
            outcome.send = sender.run(src_read, out_sock.fileno(), 0, KEY)
            out_sock.shutdown(socket.SHUT_WR)

        sending = threading.Thread(target=send)
        sending.start()
        outcome.receive = receiver.run(in_sock.fileno(), sink_write, KEY)
        os.close(sink_write)
        in_sock.shutdown(socket.SHUT_RDWR)
        sending.join(30)
        for thread in threads:
            thread.join(30)
    os.close(src_read)
    return outcome, sender, receiver


@contextmanager
def _none() -> Iterator[None]:
    yield None


def flip(source: socket.socket, target: socket.socket, at: int | None) -> None:
    """Relays ``source`` to ``target``, flipping the byte at offset ``at``."""
    seen = 0
    while block := source.recv(1 << 16):
        if at is not None and seen <= at < seen + len(block):
            mutable = bytearray(block)
            mutable[at - seen] ^= 0xFF
            block = bytes(mutable)
        seen += len(block)
        try:
            target.sendall(block)
        except OSError:
            return
    target.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("kind", ["random", "text", "mixed"])
@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, 5 * FRAME + 4097, 24 * FRAME])
def test_codec_none_splices_every_frame(kind: str, size: int) -> None:
    data = make_data(kind, size, seed=size)
    outcome, sender, receiver = run_pipes(data, "none", chunk=1 << 20)
    assert outcome.send[0] == 0, outcome.send
    assert outcome.receive[0] == 0 and receiver.ended, outcome.receive
    assert bytes(outcome.sink) == data
    frames = -(-size // FRAME)
    assert sender.frames_spliced == frames
    assert receiver.frames_spliced == frames


@pytest.mark.parametrize("codec", ["zstd", "auto"])
def test_compressing_codecs_splice_the_frames_they_send_raw(codec: str) -> None:
    data = make_data("mixed", 16 * FRAME + 100, seed=7)
    outcome, sender, receiver = run_pipes(data, codec, chunk=1 << 20)
    assert outcome.send[0] == 0 and outcome.receive[0] == 0, (outcome.send, outcome.receive)
    assert bytes(outcome.sink) == data
    assert sender.frames_spliced == sender.frames_raw
    assert receiver.frames_spliced == sender.frames_raw
    if codec == "zstd":
        assert sender.frames_zstd > 0


def as_unprivileged(check: Callable[[], dict[str, int]]) -> dict[str, int]:
    """Runs ``check`` in a child process that has dropped root, where pipes cannot grow past
    /proc/sys/fs/pipe-max-size, and returns what it reported."""
    report_read, report_write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        status = 1
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            os.write(report_write, json.dumps(check()).encode())
            status = 0
        except BaseException as exc:
            os.write(report_write, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(status)
    os.close(report_write)
    with os.fdopen(report_read, "rb") as report:
        reported = json.loads(report.read() or b"{}")
    _pid, status = os.waitpid(child, 0)
    assert status == 0, reported
    return reported


def test_frames_that_do_not_fit_a_slot_pipe_go_through_memory() -> None:
    """Writes of 2049 bytes fill each page of the source pipe only half. Unprivileged, a slot
    pipe holds exactly one frame of full pages, so no frame fits: each one finishes through
    memory, and the stream arrives intact."""
    frame = Path("/proc/sys/fs/pipe-max-size").read_text().strip()
    data = make_data("random", 6 * int(frame) + 5, seed=11)

    def check() -> dict[str, int]:
        outcome, sender, _receiver = run_pipes(data, "none", chunk=2049, frame=int(frame))
        return {"send": outcome.send[0], "receive": outcome.receive[0],
                "intact": int(bytes(outcome.sink) == data), "frames": sender.frames_raw,
                "spliced": sender.frames_spliced}

    reported = as_unprivileged(check)
    assert reported == {"send": 0, "receive": 0, "intact": 1, "frames": 7, "spliced": 1}


def test_a_corrupted_spliced_frame_never_reaches_the_sink() -> None:
    data = make_data("random", 8 * FRAME, seed=3)
    bad_frame = 5
    at = bad_frame * (HEADER_SIZE + FRAME) + HEADER_SIZE + 1000
    outcome, _sender, receiver = run_pipes(data, "none", chunk=1 << 20, relay=True, flip_at=at)
    assert outcome.receive[0] == ERROR_KINDS["integrity"], outcome.receive
    assert "failed its authentication tag" in outcome.receive[2]
    assert bytes(outcome.sink) == data[:bad_frame * FRAME]
    assert receiver.committed == bad_frame * FRAME
    assert not receiver.ended
