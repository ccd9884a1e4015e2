"""Interrupted and corrupted streams: a relay cuts connections at random offsets or flips a
byte; the transfer still arrives byte-identical (with the resumes counted), or fails cleanly
without the corrupted bytes ever reaching the file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ployz.transfer.errors import ChecksumMismatch, RetriesExhausted
from ployz.transfer.files import FileSource
from ployz.transfer.sender import RetryPolicy, Sender
from tests.host.transfer.relay import Relay, cut_at_byte, flip_at_byte
from tests.host.transfer.transfer_data import same_bytes, whole_stream_checksum

FRAME = 64 * 1024
FAST_RETRY = RetryPolicy(attempts=30, initial_backoff=0.01, max_backoff=0.05)


@pytest.mark.parametrize("codec", ["none", "zstd"])
@pytest.mark.parametrize("seed", range(4))
def test_cut_connections_resume_to_identical_bytes(tmp_path: Path, data_file, start_receiver,
                                                   signing_key, codec: str, seed: int) -> None:
    size = 3 * 1024 * 1024 + 999
    src = data_file("mixed", size, seed)
    dst = tmp_path / "received"
    receiver = start_receiver(dst)
    rng = random.Random(seed)
    # Offsets count each connection's client-to-server bytes (handshake, headers, payloads).
    # Each stays under size/16, so that even the 8th connection, which resumes and sends less,
    # still reaches its cut.
    cuts = [cut_at_byte(rng.randrange(0, size // 16)) for _ in range(rng.randint(3, 8))]
    with Relay(receiver.address, cuts) as relay:
        sent = Sender(FileSource(src), relay.address, key=signing_key, codec=codec,
                      frame_size=FRAME, retry=FAST_RETRY).send()
    received = receiver.result()
    assert same_bytes(src, dst)
    assert relay.faults_done == len(cuts)
    assert sent.evidence == received.evidence
    assert 1 <= sent.resumes <= len(cuts)
    assert received.resumes == sent.resumes


def test_cut_in_every_part_of_the_first_frames(tmp_path: Path, data_file, start_receiver,
                                               signing_key) -> None:
    """Cuts at every few bytes of the handshake and the first frame header, where a parser is
    most likely to mishandle a short read."""
    src = data_file("text", 5 * FRAME + 3)
    dst = tmp_path / "received"
    receiver = start_receiver(dst)
    cuts = [cut_at_byte(at) for at in range(0, 700, 37)]
    with Relay(receiver.address, cuts) as relay:
        Sender(FileSource(src), relay.address, key=signing_key, codec="zstd",
               frame_size=FRAME, retry=RetryPolicy(attempts=len(cuts) + 2,
                                                   initial_backoff=0.01,
                                                   max_backoff=0.05)).send()
    receiver.result()
    assert same_bytes(src, dst)
    assert relay.faults_done == len(cuts)


def test_flipped_byte_is_detected_and_the_frame_resent(tmp_path: Path, data_file,
                                                       start_receiver, signing_key) -> None:
    src = data_file("random", 1 << 20)
    dst = tmp_path / "received"
    receiver = start_receiver(dst)
    # past the handshake (well under 2 KiB), inside the payload of the third frame
    with Relay(receiver.address, [flip_at_byte(2 * FRAME + 5000)]) as relay:
        sent = Sender(FileSource(src), relay.address, key=signing_key, codec="none",
                      frame_size=FRAME, retry=FAST_RETRY).send()
    receiver.result()
    assert relay.faults_done == 1
    assert same_bytes(src, dst)
    assert sent.resumes == 1


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_persistent_corruption_fails_cleanly_and_never_reaches_the_file(
        tmp_path: Path, data_file, start_receiver, signing_key, codec: str) -> None:
    src = data_file("text", 1 << 20)
    dst = tmp_path / "received"
    receiver = start_receiver(dst)
    with (Relay(receiver.address, repeat=flip_at_byte(3000)) as relay,
          pytest.raises(RetriesExhausted) as failure):
        Sender(FileSource(src), relay.address, key=signing_key, codec=codec, frame_size=FRAME,
               retry=RetryPolicy(attempts=3, initial_backoff=0.01)).send()
    assert isinstance(failure.value.__cause__, ChecksumMismatch)
    assert not dst.exists()
    partial = dst.with_name("received.partial")
    assert src.read_bytes().startswith(partial.read_bytes())


@pytest.mark.parametrize("same_transfer", [True, False])
def test_a_restarted_receiver_resumes_from_the_durable_partial_file(
        tmp_path: Path, data_file, start_receiver, signing_key, same_transfer: bool) -> None:
    size = 2 * 1024 * 1024 + 100
    src = data_file("mixed", size)
    dst = tmp_path / "received"
    first = start_receiver(dst)
    with (Relay(first.address, [cut_at_byte(size // 2)]) as relay,
          pytest.raises(RetriesExhausted)):
        Sender(FileSource(src), relay.address, key=signing_key, codec="none",
               frame_size=FRAME, transfer_id="t-1", retry=RetryPolicy(attempts=1)).send()
    first.stop()
    partial = dst.with_name("received.partial").stat().st_size
    assert 0 < partial < size

    second = start_receiver(dst)
    sent = Sender(FileSource(src), second.address, key=signing_key, codec="none",
                  frame_size=FRAME, transfer_id="t-1" if same_transfer else "t-2").send()
    second.result()
    assert same_bytes(src, dst)
    assert sent.evidence["checksum"] == whole_stream_checksum(src.read_bytes(), FRAME)
    if same_transfer:  # only the frames the first receiver had not made durable were sent
        assert sent.wire_bytes < size - partial + size // 10
    else:  # a partial file of another transfer is never trusted
        assert sent.wire_bytes > size


def test_a_link_that_keeps_breaking_completes_while_each_connection_moves_on(
        tmp_path: Path, data_file, start_receiver, signing_key) -> None:
    src = data_file("random", 2 * 1024 * 1024)
    dst = tmp_path / "received"
    receiver = start_receiver(dst)
    with Relay(receiver.address, repeat=cut_at_byte(300_000)) as relay:
        sent = Sender(FileSource(src), relay.address, key=signing_key, codec="none",
                      frame_size=FRAME, retry=RetryPolicy(attempts=2, initial_backoff=0.01)).send()
    receiver.result()
    assert same_bytes(src, dst)
    assert sent.resumes == relay.faults_done >= 6
