"""The operator's Ed25519 key: its files, its generation and the text forms of its public half.

One key signs agent requests and transfer tickets alike, so it has one home here, in the lowest
layer that needs it: one private-key format (PKCS#8 PEM, mode 0600, never overwritten), one
loader, one generator. The public half has the two forms the command lines already take: the
text form ``ed25519:`` followed by the base64 of its 32 raw bytes (``ployzd --trust``, ``ployzctl
agent keygen``, the agent's signed requests), and a SubjectPublicKeyInfo PEM file (``ployzctl
transfer keygen`` and ``--trust``).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_PREFIX = "ed25519:"
PRIVATE_KEY_FILE = "transfer.key"
PUBLIC_KEY_FILE = "transfer.pub"

KeyPath = str | os.PathLike[str]


class BadKey(ValueError):
    """A key file or key text that cannot be used; the message says which and why."""


def generate_private_key(path: KeyPath) -> Ed25519PrivateKey:
    """Creates a new key and writes it to ``path`` (PKCS#8 PEM, mode 0600, never overwritten)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise BadKey(_exists(path)) from exc
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def generate_keypair(directory: KeyPath) -> tuple[Path, Path]:
    """Writes a new key to ``directory`` as ``transfer.key`` and its public half as the PEM file
    ``transfer.pub``; refuses (before writing either) if one of them exists already."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    private_path, public_path = root / PRIVATE_KEY_FILE, root / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise BadKey(_exists(path))
    key = generate_private_key(private_path)
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: KeyPath) -> Ed25519PrivateKey:
    """The key in a PKCS#8 PEM file; any problem (missing, unreadable, another kind of key) is
    a ``BadKey`` naming the file."""
    key = _read_pem(path, "private",
                    lambda pem: serialization.load_pem_private_key(pem, password=None))
    if not isinstance(key, Ed25519PrivateKey):
        raise BadKey(_not_ed25519(path, key, "private"))
    return key


def load_public_key(path: KeyPath) -> Ed25519PublicKey:
    """The public key in a SubjectPublicKeyInfo PEM file, as ``generate_keypair`` writes it."""
    key = _read_pem(path, "public", serialization.load_pem_public_key)
    if not isinstance(key, Ed25519PublicKey):
        raise BadKey(_not_ed25519(path, key, "public"))
    return key


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def read_public_key(text_or_path: str) -> Ed25519PublicKey:
    """The key given on a command line: its text form, or a file holding that text."""
    if os.path.isfile(text_or_path):
        return parse_public_key(Path(text_or_path).read_text().strip())
    return parse_public_key(text_or_path)


def parse_public_key(text: str) -> Ed25519PublicKey:
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise BadKey(f"public key must look like '{PUBLIC_KEY_PREFIX}BASE64', got {text[:60]!r}")
    try:
        raw = base64.b64decode(text.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise BadKey(f"not a valid Ed25519 public key: {text[:60]!r} ({exc})") from exc


def _read_pem(path: KeyPath, half: str, load: Callable[[bytes], object]) -> object:
    try:
        return load(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise BadKey(f"cannot load a {half} key from {path}: {exc}") from exc


def _not_ed25519(path: KeyPath, key: object, half: str) -> str:
    return f"{path} holds a {type(key).__name__}, not an Ed25519 {half} key"


def _exists(path: KeyPath) -> str:
    return f"{path} already exists; refusing to overwrite a key"
