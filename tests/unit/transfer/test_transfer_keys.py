"""The operator key: its files, the PEM key pair, and the text form of its public half."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.transfer.keys import (
    BadKey,
    generate_keypair,
    generate_private_key,
    load_private_key,
    load_public_key,
    parse_public_key,
    public_key_text,
    read_public_key,
)
from ployz.transfer.tickets import Target, Ticket, sign, verify


def test_private_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "operator.pem"
    key = generate_private_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_private_key(path)
    assert public_key_text(loaded.public_key()) == public_key_text(key.public_key())
    with pytest.raises(BadKey, match="refusing to overwrite"):
        generate_private_key(path)


def test_keypair_files_load_back(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600
    ticket = Ticket("t-1", Target("file", "/x"), time.time() + 86400)
    assert verify(sign(ticket, load_private_key(private)), load_public_key(public)) == ticket
    with pytest.raises(BadKey, match="already exists"):
        generate_keypair(tmp_path)
    with pytest.raises(BadKey, match="public key"):
        load_public_key(private)


def test_keypair_refuses_before_writing_either_file(tmp_path: Path) -> None:
    (tmp_path / "transfer.pub").write_text("someone else's")
    with pytest.raises(BadKey, match=r"transfer\.pub"):
        generate_keypair(tmp_path)
    assert not (tmp_path / "transfer.key").exists()


def test_public_key_text_and_file(tmp_path: Path) -> None:
    text = public_key_text(Ed25519PrivateKey.generate().public_key())
    assert text.startswith("ed25519:")
    assert public_key_text(parse_public_key(text)) == text
    file = tmp_path / "operator.pub"
    file.write_text(text + "\n")
    assert public_key_text(read_public_key(str(file))) == text


@pytest.mark.parametrize("text", ["abc", "ed25519:abc", "ed25519:" + "A" * 40 + "=="])
def test_bad_public_keys_are_refused(text: str) -> None:
    with pytest.raises(BadKey):
        parse_public_key(text)


@pytest.mark.parametrize("content", [None, "not a key"])
def test_unloadable_private_key_names_the_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "nope.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadKey, match=r"nope\.pem"):
        load_private_key(path)
