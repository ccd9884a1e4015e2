"""Receive resume tokens: parsed here, without /dev/zfs, so that a sender can check a token
against what it intends to send (toname, toguid, fromguid) before trusting it."""

from __future__ import annotations

import array
import sys
import zlib
from dataclasses import dataclass

from ployz.zfs.errors import InvalidResumeToken
from ployz.zfs.nvlist import unpack

TOKEN_VERSION = 1


def _fletcher4_word0(data: bytes) -> int:
    """First word of ZFS's native-endian fletcher4 over whole 32-bit words: their sum mod 2**64."""
    words = array.array("I", data[: len(data) // 4 * 4])
    if sys.byteorder != "little":
        words.byteswap()
    return sum(words) & 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class ResumeToken:
    """Where an interrupted receive stopped, and which stream it was receiving."""

    text: str
    toname: str
    toguid: int
    fromguid: int
    object: int
    offset: int
    bytes: int
    embedded: bool
    large_blocks: bool
    compressed: bool
    raw: bool

    @property
    def incremental(self) -> bool:
        return self.fromguid != 0

    @classmethod
    def parse(cls, text: str) -> ResumeToken:
        text = text.strip()
        try:
            version_s, checksum_s, packed_len_s, payload_hex = text.split("-", 3)
            version = int(version_s)
            checksum = int(checksum_s, 16)
            packed_len = int(packed_len_s, 16)
            compressed = bytes.fromhex(payload_hex)
        except ValueError:
            raise InvalidResumeToken(0, text[:40], "not a ZFS receive resume token") from None
        if version != TOKEN_VERSION:
            raise InvalidResumeToken(0, text[:40], f"unsupported resume token version {version}")
        if _fletcher4_word0(compressed) != checksum:
            raise InvalidResumeToken(0, text[:40], "resume token checksum mismatch (corrupted)")
        try:
            packed = zlib.decompress(compressed)
        except zlib.error as exc:
            raise InvalidResumeToken(0, text[:40],
                                     f"resume token does not inflate: {exc}") from None
        if len(packed) != packed_len:
            raise InvalidResumeToken(0, text[:40], "resume token has the wrong length")
        try:
            fields = unpack(packed)
            return cls(
                text=text,
                toname=fields["toname"],
                toguid=fields["toguid"],
                fromguid=fields.get("fromguid", 0),
                object=fields["object"],
                offset=fields["offset"],
                bytes=fields.get("bytes", 0),
                embedded="embedok" in fields,
                large_blocks="largeblockok" in fields,
                compressed="compressok" in fields,
                raw="rawok" in fields,
            )
        except (KeyError, ValueError) as exc:
            raise InvalidResumeToken(0, text[:40], f"resume token lacks a field: {exc}") from None
