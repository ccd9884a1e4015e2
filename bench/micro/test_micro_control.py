"""The Python side of the wire and the handshake: frame headers, control messages, ticket
verification and resume-token parsing. Each runs once per connection, not per byte, so these
bound how fast a receiver refuses garbage and how cheaply a sender resumes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz import zfs
from ployz.transfer import protocol as p
from ployz.transfer.tickets import Target, Ticket, sign, verify
from ployz.transfer.tuning import CpuProbe, Measurements, recommend

TOKEN = Path(__file__).parent / "fixtures" / "resume_token.txt"


@pytest.mark.benchmark(group="header")
def test_header_pack_unpack(benchmark) -> None:
    header = p.Header(p.FLAG_ZSTD, 400_000, p.DEFAULT_FRAME_SIZE, 1 << 30, 0x1234_5678_9ABC)
    benchmark(lambda: p.Header.unpack(header.pack()))


@pytest.mark.benchmark(group="control")
def test_control_encode_decode(benchmark) -> None:
    hello = {"type": p.HELLO, "protocol": p.PROTOCOL_VERSION, "ticket": "x" * 400,
             "transfer_id": "6f1c", "frame_size": p.DEFAULT_FRAME_SIZE,
             "codecs": ["zstd", "none"], "stream": {"toguid": 1 << 60, "size": 1 << 34}}

    def round_trip() -> dict:
        frame = p.encode_control(hello)
        header = p.Header.unpack(frame[:p.HEADER_SIZE])
        return p.decode_control(header, frame[p.HEADER_SIZE:])

    assert benchmark(round_trip) == hello


@pytest.mark.benchmark(group="ticket")
def test_ticket_verify(benchmark) -> None:
    key = Ed25519PrivateKey.generate()
    ticket = Ticket("6f1c", Target("zfs", "tank/vol"), time.time() + 600, 1 << 60, 1 << 59)
    token, trusted = sign(ticket, key), key.public_key()
    assert benchmark(verify, token, trusted) == ticket


@pytest.mark.benchmark(group="resume-token")
def test_resume_token_parse(benchmark) -> None:
    """A token OpenZFS wrote for a receive cut half way (see resume_token_fixture.py)."""
    text = TOKEN.read_text().strip()
    token = benchmark(zfs.ResumeToken.parse, text)
    assert token.toguid and token.offset


@pytest.mark.benchmark(group="codec-choice")
def test_codec_choice_recommend(benchmark) -> None:
    """The decision ``ployzctl transfer tune`` makes from its probes (the per-frame choice of
    codec auto is in the native encode benchmarks above)."""
    measured = Measurements(link_MB_per_s=100.0, rtt_ms=0.5, framing_MB_per_s=2000.0,
                            zstd=(CpuProbe(1, 400.0, 0.35), CpuProbe(3, 150.0, 0.3)), cores=2)
    assert benchmark(recommend, measured).codec == "zstd"
