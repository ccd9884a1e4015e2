"""Framing and the control-plane capacity mapping."""

from __future__ import annotations

import asyncio
import struct

import pytest

from ployz.agent.control_link import capacity_of
from ployz.agent.errors import ProtocolViolation
from ployz.agent.protocol import (
    MAX_FRAME_BYTES,
    encode_frame,
    read_frame,
)


def read(data: bytes):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader)

    return asyncio.run(go())


def test_frame_round_trip_and_clean_end():
    message = {"id": 1, "method": "agent.health", "params": {"ü": [1, 2.5, None]}}
    assert read(encode_frame(message)) == message
    assert read(b"") is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x00", "header"),
        (b"\x00\x00\x00\x09{}", "inside a frame"),
        (struct.pack(">I", MAX_FRAME_BYTES + 1), "exceeds"),
        (b"\x00\x00\x00\x02[]", "not a JSON object"),
        (b"\x00\x00\x00\x03{x}", "not valid JSON"),
    ],
)
def test_malformed_frames_are_protocol_violations(data, problem):
    with pytest.raises(ProtocolViolation, match=problem):
        read(data)


def test_nan_cannot_be_sent():
    with pytest.raises(ValueError):
        encode_frame({"x": float("nan")})


def test_capacity_fact_from_agent_facts():
    capacity = capacity_of({"pool_free": 700, "pool_used": 300, "containers": 2})
    assert capacity is not None
    assert (capacity.pool_size, capacity.pool_free, capacity.pool_used, capacity.containers) == (
        1000, 700, 300, 2
    )
    assert capacity.runtime_up
    assert capacity_of({"pool_free": None, "pool_used": None, "containers": None}) is None
    without_docker = capacity_of({"pool_free": 700, "pool_used": 300, "containers": None})
    assert without_docker is not None and not without_docker.runtime_up
