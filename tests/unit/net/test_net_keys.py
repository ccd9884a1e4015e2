"""WireGuard keys made in Python: the same text forms as `wg genkey` and `wg pubkey`."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from ployz.net.errors import BadWireGuardKey
from ployz.net.keys import (
    clamped,
    generate_private_key,
    public_key_of,
    read_private_key,
    write_private_key,
)

# RFC 7748, section 6.1: Alice's private and public keys.
RFC_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_public_key_is_the_x25519_public_key_in_base64():
    assert public_key_of(b64(RFC_PRIVATE)) == b64(RFC_PUBLIC)


def test_generated_keys_are_clamped_as_wg_genkey_writes_them():
    for _ in range(20):
        key = generate_private_key()
        raw = base64.b64decode(key)
        assert len(key) == 44 and len(raw) == 32
        assert raw[0] & 7 == 0 and raw[31] & 0xC0 == 0x40
        assert clamped(key) == key


def test_clamping_keeps_the_public_key():
    assert clamped(b64(RFC_PRIVATE)) != b64(RFC_PRIVATE)
    assert public_key_of(clamped(b64(RFC_PRIVATE))) == b64(RFC_PUBLIC)


def test_key_file_is_private_read_back_and_never_overwritten(tmp_path: Path):
    path = tmp_path / "wg.key"
    key = generate_private_key()
    write_private_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == key + "\n"
    assert read_private_key(path) == key
    with pytest.raises(BadWireGuardKey, match="exists already"):
        write_private_key(path, generate_private_key())
    assert read_private_key(path) == key


def test_bad_keys_and_key_files_are_named(tmp_path: Path):
    with pytest.raises(BadWireGuardKey, match="private key"):
        public_key_of("c2hvcnQ=")
    with pytest.raises(BadWireGuardKey, match=r"cannot read .*missing\.key"):
        read_private_key(tmp_path / "missing.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not base64 at all\n")
    with pytest.raises(BadWireGuardKey, match=r"garbage\.key"):
        read_private_key(garbage)
