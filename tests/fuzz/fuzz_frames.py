"""Fuzzes the native receiver (``ployz._xfer.StreamReceiver``), the code that decodes data frames
straight off the network, through its real entry point: the bytes go down a socketpair into
``run(sock_fd, sink_fd, key, encrypt)`` with a memfd or a pipe as the sink.

A finding is a crash, a hang (libFuzzer's ``-timeout``), a result that is not one of the typed
error kinds, or any difference from the reference model in ``wire.py``: bytes written that no
authentic frame carried, frames written out of order, a good stream not accepted, a bad one not
refused, or counters that disagree with the sink.

Input layout: byte 0 holds bits for the mode (bit 0: structured), encrypt (1), zstd allowed (2)
and a pipe sink (3), bits 4-5 the worker count; byte 1 picks the frame size. In raw mode the rest
is the wire stream as it is, which is how seeds taken from the real sender start; in structured
mode the rest drives a generator of sealed frames with one field at a time made wrong, so that
the fuzzer gets past the tag (which it cannot forge) to the rules behind it, over up to three
connections into the same receiver, as a resuming sender would make them.

Run: ``python tests/fuzz/fuzz_frames.py [libFuzzer flags] [corpus dirs]``, or through
``tests/fuzz/run.py``.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import sys
import threading
from dataclasses import dataclass

import atheris

with atheris.instrument_imports():
    import wire
    from wire import (
        CHECKSUM,
        END_PAYLOAD,
        FLAG_END,
        FLAG_ZSTD,
        KIND_CONTROL,
        KIND_END,
        MAGIC,
        OK,
        Config,
        Verdict,
        native,
    )

from ployz.transfer.errors import TransferError, native_error

FRAME_SIZES = (1, 16, 333, 4096, 65536)
WORKERS = (1, 2, 3, 3)
MAX_CONNECTIONS = 3
IDLE = struct.pack("ll", 5, 0)  # a receiver still waiting 5 s after EOF is stuck: a finding
U64 = 2**64 - 1
U32 = 2**32 - 1


class Finding(AssertionError):
    """The native receiver did something the protocol does not allow."""


@dataclass
class Outcome:
    kind: int
    errno: int
    message: str
    written: bytes  # what reached the sink in this run


@atheris.instrument_func
def parse_config(data: bytes) -> tuple[Config, bool, bool]:
    """The receiver's settings and the mode (structured?) and sink (pipe?) an input asks for."""
    bits = data[0]
    config = Config(frame_size=FRAME_SIZES[data[1] % len(FRAME_SIZES)],
                    allow_zstd=bool(bits & 4), workers=WORKERS[(bits >> 4) & 3],
                    encrypt=bool(bits & 2))
    return config, bool(bits & 1), bool(bits & 8)


def config_bytes(config: Config, structured: bool, pipe: bool) -> bytes:
    """The two leading bytes of an input with these settings (for the seed corpus)."""
    bits = (structured | config.encrypt << 1 | config.allow_zstd << 2 | pipe << 3
            | WORKERS.index(config.workers) << 4)
    return bytes((bits, FRAME_SIZES.index(config.frame_size)))


# ---- structured inputs ---------------------------------------------------------------------


@atheris.instrument_func
def _content(fdp: atheris.FuzzedDataProvider, length: int) -> bytes:
    """A payload: compressible, incompressible, or the fuzzer's own bytes."""
    how = fdp.ConsumeIntInRange(0, 2)
    if how == 0:
        return bytes((fdp.ConsumeIntInRange(0, 255),)) * length
    if how == 1:
        return random.Random(fdp.ConsumeIntInRange(0, 255)).randbytes(length)
    return fdp.ConsumeBytes(length).ljust(length, b"\0")


@atheris.instrument_func
def _emit(fdp: atheris.FuzzedDataProvider, config: Config, flags: int, raw_len: int,
          offset: int, checksum: int, payload: bytes) -> bytes:
    """A sealed frame, usually honest; else with one header field made wrong before sealing
    (authentic but breaking a rule), or with its seal or its length broken after."""
    magic, reserved, wire_len, kind = MAGIC, 0, len(payload), None
    field = fdp.ConsumeIntInRange(0, 13)
    if field == 7:
        magic = fdp.ConsumeIntInRange(0, U32)
    elif field == 8:
        flags = fdp.ConsumeIntInRange(0, 0xFFFF)
    elif field == 9:
        reserved = fdp.ConsumeIntInRange(1, 0xFFFF)
    elif field == 10:
        wire_len = fdp.ConsumeIntInRange(0, U32)
    elif field == 11:
        offset = fdp.ConsumeIntInRange(0, U64)
    elif field == 12:
        raw_len = fdp.ConsumeIntInRange(0, U32)
    elif field == 13:
        kind = (KIND_END if not flags & FLAG_END else wire.KIND_DATA, KIND_CONTROL)[
            fdp.ConsumeIntInRange(0, 1)]
    data = bytearray(wire.frame(config.key, config.encrypt, flags, raw_len, offset, checksum,
                                payload, magic=magic, reserved=reserved, wire_len=wire_len,
                                kind=kind))
    damage = fdp.ConsumeIntInRange(0, 9)
    if damage == 8:  # one bit flipped anywhere: the tag must catch it
        at = fdp.ConsumeIntInRange(0, len(data) - 1)
        data[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
    elif damage == 9:  # cut short: the connection ends inside the frame
        del data[fdp.ConsumeIntInRange(0, len(data) - 1):]
    return bytes(data)


@atheris.instrument_func
def structured_stream(fdp: atheris.FuzzedDataProvider, config: Config, start: int) -> bytes:
    """One connection's bytes: frames a sender could make, from ``start`` on, some made wrong."""
    out = bytearray()
    sent: list[bytes] = []
    expect = start
    for _ in range(fdp.ConsumeIntInRange(0, 10)):
        op = fdp.ConsumeIntInRange(0, 9)
        if op == 0:  # bytes that are no frame at all
            out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
            continue
        if op == 1 and sent:  # an earlier frame replayed as it was
            out += sent[fdp.ConsumeIntInRange(0, len(sent) - 1)]
            continue
        if op == 2:
            total = expect if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, U64)
            payload = struct.pack("<QQ", total, fdp.ConsumeIntInRange(0, U64))
            checksum = 0 if config.encrypt else native.frame_checksum(payload, expect)
            if fdp.ConsumeIntInRange(0, 7) == 0:
                checksum = fdp.ConsumeIntInRange(0, U64)
            data = _emit(fdp, config, FLAG_END, END_PAYLOAD, expect, checksum, payload)
        else:
            size = fdp.ConsumeIntInRange(0, 3)
            length = (config.frame_size, fdp.ConsumeIntInRange(1, config.frame_size),
                      config.frame_size + 1, 0)[size]
            plain = _content(fdp, length)
            flags, payload = 0, plain
            if op >= 6:
                flags, payload = FLAG_ZSTD, wire.zstd_compress(plain, fdp.ConsumeIntInRange(1, 3))
                if fdp.ConsumeIntInRange(0, 7) == 0 and payload:  # a damaged zstd frame
                    at = fdp.ConsumeIntInRange(0, len(payload) - 1)
                    payload = (payload[:at] + bytes((payload[at] ^ fdp.ConsumeIntInRange(1, 255),))
                               + payload[at + 1:])
            checksum = 0 if config.encrypt else native.frame_checksum(plain, expect)
            if fdp.ConsumeIntInRange(0, 7) == 0:
                checksum = fdp.ConsumeIntInRange(0, U64)
            data = _emit(fdp, config, flags, length, expect, checksum, payload)
            expect += length
        sent.append(data)
        out += data
    if fdp.ConsumeIntInRange(0, 3) == 0:
        out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
    return bytes(out)


# ---- running the native receiver -------------------------------------------------------------


def _feed(sock: socket.socket, data: bytes) -> None:
    """Sends the input and then EOF; gives up quietly when the receiver stops reading."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 1 << 16):
        into += chunk


def run_native(receiver: object, config: Config, stream: bytes, sink: int | None) -> Outcome:
    """One connection of ``stream`` into ``receiver``: into the memfd ``sink`` at the commit
    point (as a file sink does), or into a fresh pipe when ``sink`` is None (as ``zfs receive``
    is fed)."""
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, IDLE)
    feeder = threading.Thread(target=_feed, args=(ours, stream), daemon=True)
    written = bytearray()
    drainer = None
    try:
        feeder.start()
        if sink is None:
            read_end, write_end = os.pipe()
            drainer = threading.Thread(target=_drain, args=(read_end, written), daemon=True)
            drainer.start()
            try:
                result = receiver.run(theirs.fileno(), write_end, config.key, config.encrypt)
            finally:
                os.close(write_end)
                drainer.join()
                os.close(read_end)
        else:
            committed = receiver.committed
            os.ftruncate(sink, committed)
            os.lseek(sink, committed, os.SEEK_SET)
            result = receiver.run(theirs.fileno(), sink, config.key, config.encrypt)
            size = os.fstat(sink).st_size
            written += os.pread(sink, size - committed, committed) if size > committed else b""
    finally:
        theirs.close()
        feeder.join()
        ours.close()
    kind, err, message = result
    return Outcome(kind, err, message, bytes(written))


# ---- the oracle ------------------------------------------------------------------------------


@atheris.instrument_func
def _signal(kind: int, ended: bool, frames: int, verdict: Verdict) -> int:
    """Branches per outcome, so that libFuzzer, which sees only Python coverage, keeps inputs
    that reach a new kind of result of the native decoder. Returns a bucket nobody reads."""
    bucket = 0
    if kind == OK:
        bucket = 1
    elif kind == wire.CONNECTION:
        bucket = 2
    elif kind == wire.FRAMING:
        bucket = 3
    elif kind == wire.INTEGRITY:
        bucket = 4
    elif kind == wire.PROTOCOL:
        bucket = 5
    elif kind == CHECKSUM:
        bucket = 6
    if ended:
        bucket += 10
    if frames == 0:
        bucket += 100
    elif frames == 1:
        bucket += 200
    elif frames < 4:
        bucket += 300
    if verdict.first_bad < len(verdict.frames):
        bucket += 1000
    return bucket


@atheris.instrument_func
def check(config: Config, verdict: Verdict, outcome: Outcome, receiver: object,
          before: tuple[int, int], sums: list[int]) -> int:
    """Holds one run of the native receiver against the model; returns the frames it wrote."""
    committed_before, frames_before = before
    kind, message, written = outcome.kind, outcome.message, outcome.written
    frames = receiver.frames - frames_before
    if kind not in wire.KINDS.values() and kind != OK:
        raise Finding(f"untyped result kind {kind}: {message!r}")
    if kind != OK and (not isinstance(message, str) or not message):
        raise Finding(f"error kind {kind} without a message")
    if kind != OK:
        error = native_error(kind, message)
        if not isinstance(error, TransferError) or type(error) is TransferError:
            raise Finding(f"error kind {kind} maps to no specific error: {message!r}")
    limit = min(verdict.first_bad, len(verdict.frames))
    if not 0 <= frames <= limit:
        raise Finding(f"wrote {frames} frames; only the first {limit} were good "
                      f"(native {kind}: {message!r}; model: {verdict.reason})")
    expected = b"".join(f.plain for f in verdict.frames[:frames])
    if written != expected:
        raise Finding(f"the sink got {len(written)} bytes that are not the {frames} good "
                      f"frames' {len(expected)} (native {kind}: {message!r})")
    if receiver.committed != committed_before + len(written):
        raise Finding(f"committed {receiver.committed} after {committed_before} "
                      f"+ {len(written)} bytes written")
    if receiver.wire_bytes < 0:
        raise Finding("negative wire byte count")
    sums.extend(f.checksum for f in verdict.frames[:frames])
    good_end = verdict.stop is None and limit == len(verdict.frames)
    _signal(kind, receiver.ended, frames, verdict)
    if good_end:
        if kind != OK or not receiver.ended:
            raise Finding(f"a good stream was refused: kind {kind}: {message!r}")
        if frames != len(verdict.frames):
            raise Finding(f"ended after {frames} of {len(verdict.frames)} good frames")
        assert verdict.end is not None
        if (receiver.end_total, receiver.end_chain) != verdict.end:
            raise Finding(f"end frame read as {(receiver.end_total, receiver.end_chain)}, "
                          f"sent {verdict.end}")
        chain = native.chain_checksum(struct.pack(f"<{len(sums)}Q", *sums))
        if receiver.chain_value != chain:
            raise Finding(f"whole-stream checksum {receiver.chain_value:#x}, "
                          f"expected {chain:#x} over {len(sums)} frames")
        return frames
    if kind == OK or receiver.ended:
        raise Finding(f"a bad stream was accepted ({verdict.reason}): kind {kind}, "
                      f"ended {receiver.ended}")
    if verdict.stop == wire.INTEGRITY and limit == len(verdict.frames) and (
            kind != wire.INTEGRITY or frames != limit):
        # the writer reaches a forged frame in order: every good frame before it is written
        raise Finding(f"a forged frame after {limit} good ones ended the run with kind {kind} "
                      f"({message!r}) after writing {frames}")
    allowed = {verdict.stop} if verdict.stop is not None else set()
    if limit < len(verdict.frames):
        allowed.add(CHECKSUM)
    if kind not in allowed:
        raise Finding(f"refused with kind {kind} ({message!r}); the model expects one of "
                      f"{sorted(allowed)} ({verdict.reason})")
    return frames


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    config, structured, pipe = parse_config(data)
    receiver = native.StreamReceiver(config.frame_size, config.allow_zstd, config.workers)
    fdp = atheris.FuzzedDataProvider(data[2:])
    sink = None if pipe else os.memfd_create("ployz-fuzz-sink", os.MFD_CLOEXEC)
    sums: list[int] = []
    short_seen = False
    try:
        for _ in range(MAX_CONNECTIONS if structured else 1):
            start = receiver.committed
            stream = structured_stream(fdp, config, start) if structured else data[2:]
            verdict = wire.judge(config, stream, start, short_seen)
            before = (start, receiver.frames)
            outcome = run_native(receiver, config, stream, sink)
            frames = check(config, verdict, outcome, receiver, before, sums)
            short_seen = short_seen or any(len(f.plain) < config.frame_size
                                           for f in verdict.frames[:frames])
            if receiver.ended or fdp.remaining_bytes() == 0:
                break
    finally:
        if sink is not None:
            os.close(sink)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
