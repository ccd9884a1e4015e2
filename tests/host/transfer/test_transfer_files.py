"""File-to-file transfers through the real engine over loopback: byte-identical for every kind
of data, size and codec, with the receiver's acknowledgement as evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from ployz.transfer.files import FileSource
from ployz.transfer.progress import Progress
from ployz.transfer.sender import Sender
from tests.host.transfer.transfer_data import same_bytes, whole_stream_checksum

FRAME = 64 * 1024
SIZES = [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME + 12345, 2 * 1024 * 1024 + 7]


@pytest.mark.parametrize("codec", ["none", "zstd", "auto"])
@pytest.mark.parametrize("kind", ["random", "text", "mixed"])
@pytest.mark.parametrize("size", SIZES)
def test_file_arrives_byte_identical(tmp_path: Path, data_file, start_receiver, signing_key,
                                     kind: str, size: int, codec: str) -> None:
    src = data_file(kind, size)
    dst = tmp_path / "received"
    receiver = start_receiver(dst)

    sent = Sender(FileSource(src), receiver.address, key=signing_key, codec=codec,
                  frame_size=FRAME).send()
    received = receiver.result()

    assert same_bytes(src, dst)
    assert not dst.with_name("received.partial").exists()
    assert sent.bytes == received.bytes == size
    assert sent.resumes == 0
    assert sent.evidence == received.evidence == {
        "kind": "file", "path": str(dst), "size": size,
        "checksum": whole_stream_checksum(src.read_bytes(), FRAME)}
    assert sent.wire_bytes == received.wire_bytes


def test_zstd_shrinks_text_and_sends_random_raw(tmp_path: Path, data_file, start_receiver,
                                               signing_key) -> None:
    text, noise = data_file("text", 1 << 20), data_file("random", 1 << 20, seed=1)
    results = {}
    for name, src in (("text", text), ("random", noise)):
        dst = tmp_path / f"out-{name}"
        receiver = start_receiver(dst)
        results[name] = Sender(FileSource(src), receiver.address, key=signing_key,
                               codec="zstd", frame_size=FRAME).send()
        receiver.result()
        assert same_bytes(src, dst)
    assert results["text"].wire_bytes < (1 << 20) // 2
    assert results["text"].frames_raw == 0
    assert results["random"].frames_zstd == 0
    assert results["random"].wire_bytes == (1 << 20) + 16 * 48 + 48 + 16


def test_codec_none_never_compresses(tmp_path: Path, data_file, start_receiver,
                                     signing_key) -> None:
    src = data_file("text", 1 << 20)
    receiver = start_receiver(tmp_path / "out")
    sent = Sender(FileSource(src), receiver.address, key=signing_key, codec="none",
                  frame_size=FRAME).send()
    assert receiver.result().codec == "none"
    assert sent.frames_zstd == 0 and sent.codec == "none"


def test_codec_auto_sends_raw_to_a_peer_on_this_machine(tmp_path: Path, data_file,
                                                         start_receiver, signing_key) -> None:
    """Text that zstd shrinks fourfold still goes raw over loopback: no wire to save there,
    and compressing would take the receiver's cores."""
    src = data_file("text", 4 << 20)
    receiver = start_receiver(tmp_path / "out")
    assert receiver.address[0].startswith("127.")
    sent = Sender(FileSource(src), receiver.address, key=signing_key, codec="auto",
                  frame_size=FRAME).send()
    receiver.result()
    assert same_bytes(src, tmp_path / "out")
    assert sent.codec == "auto" and sent.frames_zstd == 0 and sent.frames_raw == (4 << 20) // FRAME


def test_codec_auto_compresses_from_the_first_frame_behind_a_bandwidth_limit(
        tmp_path: Path, data_file, start_receiver, signing_key) -> None:
    """A bandwidth limit is a slow link known in advance, on loopback too: text is compressed
    from its first frame, without waiting for a measurement of the link."""
    src = data_file("text", 4 << 20)
    receiver = start_receiver(tmp_path / "out")
    sent = Sender(FileSource(src), receiver.address, key=signing_key, codec="auto",
                  frame_size=FRAME, bwlimit=8e6).send()
    receiver.result()
    assert same_bytes(src, tmp_path / "out")
    assert sent.frames_raw == 0 and sent.frames_zstd == (4 << 20) // FRAME


def test_progress_reaches_exactly_100_percent_and_never_more(tmp_path: Path, data_file,
                                                             start_receiver,
                                                             signing_key) -> None:
    src = data_file("random", 4 << 20)
    receiver = start_receiver(tmp_path / "out")
    seen: list[Progress] = []
    Sender(FileSource(src), receiver.address, key=signing_key, codec="none", frame_size=FRAME,
           bwlimit=16e6, progress=seen.append, progress_interval=0.02).send()
    receiver.result()
    assert len(seen) > 3
    assert all(0 <= (p.fraction or 0) <= 1 for p in seen)
    assert [p.fraction for p in seen if p.finished] == [1.0]
    assert seen[-1].finished and seen[-1].done == 4 << 20
    assert [p.done for p in seen] == sorted(p.done for p in seen)
