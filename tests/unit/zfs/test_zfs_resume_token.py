"""Resume-token parsing needs no kernel module: malformed tokens get precise errors."""

from __future__ import annotations

import zlib

import pytest

from ployz import zfs
from ployz.zfs.resume import _fletcher4_word0


def token_for(payload: bytes, *, version: int = 1, checksum: int | None = None,
              length: int | None = None) -> str:
    compressed = zlib.compress(payload)
    word0 = _fletcher4_word0(compressed) if checksum is None else checksum
    size = len(payload) if length is None else length
    return f"{version}-{word0:x}-{size:x}-{compressed.hex()}"


@pytest.mark.parametrize("text", ["", "garbage", "1-zz-10-00", "1-0-0"])
def test_not_a_token(text: str) -> None:
    with pytest.raises(zfs.InvalidResumeToken, match="not a ZFS receive resume token"):
        zfs.ResumeToken.parse(text)


def test_wrong_version() -> None:
    with pytest.raises(zfs.InvalidResumeToken, match="version 2"):
        zfs.ResumeToken.parse(token_for(b"x" * 8, version=2))


def test_checksum_mismatch() -> None:
    with pytest.raises(zfs.InvalidResumeToken, match="checksum"):
        zfs.ResumeToken.parse(token_for(b"x" * 8, checksum=1))


def test_wrong_length() -> None:
    with pytest.raises(zfs.InvalidResumeToken, match="length"):
        zfs.ResumeToken.parse(token_for(b"x" * 8, length=9))


def test_payload_that_is_not_an_nvlist() -> None:
    with pytest.raises(zfs.InvalidResumeToken, match="nvlist"):
        zfs.ResumeToken.parse(token_for(b"\x00" * 16))


def test_fletcher4_word0_sums_whole_little_endian_words() -> None:
    assert _fletcher4_word0(bytes([1, 0, 0, 0, 2, 0, 0, 0, 9])) == 3
