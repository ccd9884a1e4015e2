"""WireGuard key pairs (X25519) in the text form ``wg genkey`` and ``wg pubkey`` use: base64 of
the 32 raw bytes. Generated here, in Python, so whoever creates a machine's key file needs no
``wg`` binary; the file holds the private key and a newline, as ``wg genkey > FILE`` writes it.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ployz.net.errors import BadWireGuardKey

KEY_BYTES = 32
KeyPath = str | os.PathLike[str]


def generate_private_key() -> str:
    """A new private key, clamped as ``wg genkey`` writes it."""
    raw = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(_clamped(raw)).decode()


def clamped(private: str) -> str:
    """``private`` as the kernel stores it, and so reports it back: clamped (RFC 7748). Any 32
    bytes are a valid key, and clamping does not change the public key, but comparing what the
    kernel reports with an unclamped key file would see a difference at every look."""
    return base64.b64encode(_clamped(key_bytes(private, "private key"))).decode()


def _clamped(raw: bytes) -> bytes:
    key = bytearray(raw)
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


def public_key_of(private: str) -> str:
    """The public key peers are given for ``private`` (what ``wg pubkey`` prints)."""
    key = X25519PrivateKey.from_private_bytes(key_bytes(private, "private key"))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def canonical_key(text: str, what: str = "public key") -> str:
    """``text`` in the one base64 spelling the kernel reports back. A decoder accepts other
    spellings of the same 32 bytes (non-zero bits in the last character), and comparing one of
    those with the kernel's would see two peers where there is one."""
    return base64.b64encode(key_bytes(text, what)).decode()


def key_bytes(text: str, what: str) -> bytes:
    """The 32 raw bytes of a base64 key; :class:`BadWireGuardKey` naming ``what`` otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != KEY_BYTES:
        raise BadWireGuardKey(f"the {what} is not a WireGuard key (32 bytes in base64)")
    return raw


def write_private_key(path: KeyPath, private: str) -> None:
    """Writes ``private`` to a new file of mode 0600; never overwrites one (a machine's key is
    its identity in every peer's configuration)."""
    key_bytes(private, "private key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise BadWireGuardKey(f"{os.fspath(path)} exists already: not overwriting a key") from exc
    with os.fdopen(fd, "w") as out:
        out.write(private + "\n")


def read_private_key(path: KeyPath) -> str:
    """The base64 private key held in ``path``; :class:`BadWireGuardKey` naming the file if it
    cannot be read or holds no key."""
    try:
        with open(path) as key_file:
            text = key_file.read().strip()
    except OSError as exc:
        raise BadWireGuardKey(f"cannot read {os.fspath(path)}: {exc.strerror}") from exc
    key_bytes(text, f"content of {os.fspath(path)}")
    return text
