"""The cryptography of the protocol v2 handshake and of the frames it protects.

Each connection agrees fresh X25519 keys, so that what an on-path attacker records or replays
from one connection is worth nothing on another. Every proof covers a transcript hash of the
messages exchanged so far, and the session keys are derived from that transcript as well: an
altered INFO or HELLO leaves the two sides with different keys, and the first sealed frame fails.

Nothing here touches a socket; the sender and the receiver call these functions and keep the
conversation. Values from the network (key exchange values, proofs) are checked here and refused
with typed errors, never with a bare ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ployz.transfer.errors import AuthenticationFailed, IntegrityError, ProtocolError

# Each signature, hash and key derivation has its own domain, so that a value made for one use
# (a ticket, a HELLO proof, an ACCEPT proof) can never be passed off as another.
DOMAIN_HELLO = b"ployz-transfer-v2 hello\0"
DOMAIN_SESSION = b"ployz-transfer-v2 session\0"
DOMAIN_PROOF = b"ployz-transfer-v2 proof\0"
DOMAIN_RECEIVER = b"ployz-transfer-v2 receiver\0"
KEYS_INFO = b"ployz-transfer-v2 keys"
CONFIRM_INFO = b"ployz-transfer-v2 confirm"
SECRET_SIZE = 32
KEY_SIZE = 32
SIGNATURE_SIZE = 64
TAG_SIZE = 16
KIND_DATA, KIND_END, KIND_CONTROL = 1, 2, 3


def _decode(value: object, size: int) -> bytes | None:
    """The bytes of a peer's base64 field, or None. Only the canonical encoding is taken, so a
    value has exactly one spelling and the transcripts of both sides agree on it."""
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None
    if len(raw) != size or base64.b64encode(raw).decode() != value:
        return None
    return raw


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Ephemeral:
    """One X25519 key pair per connection."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                  serialization.PublicFormat.Raw)
        self.public_text = _encode(raw)

    def exchange(self, peer_text: object) -> bytes:
        """The shared secret with the peer's ``kx``. A low-order peer key would force a known
        (all-zero) secret, the same on every connection, so it is refused."""
        raw = _decode(peer_text, KEY_SIZE)
        if raw is None:
            raise ProtocolError("the peer's key exchange value is malformed")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(raw))
        except ValueError:  # OpenSSL refuses the all-zero result itself
            shared = bytes(KEY_SIZE)
        if not any(shared):
            raise AuthenticationFailed("the peer's key exchange value is a low-order point")
        return shared


def canonical(message: dict[str, Any]) -> bytes:
    """The bytes both sides hash: the same encoding as ``protocol.encode_control``."""
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def hello_transcript(info_payload: bytes, hello: dict[str, Any]) -> bytes:
    """What the HELLO proof covers: the proof cannot cover itself, so it is left out."""
    body = {key: value for key, value in hello.items() if key != "proof"}
    return hashlib.sha256(DOMAIN_HELLO + info_payload + canonical(body)).digest()


def session_transcript(info_payload: bytes, hello_payload: bytes) -> bytes:
    """Covers both messages byte for byte, as sent, proof included."""
    return hashlib.sha256(DOMAIN_SESSION + info_payload + hello_payload).digest()


@dataclass(frozen=True)
class SessionKeys:
    """One key per direction, so that a frame cannot be reflected back to its sender."""

    sender: bytes = field(repr=False)  # sender -> receiver frames
    receiver: bytes = field(repr=False)  # receiver -> sender frames
    encrypt: bool


def derive_keys(shared: bytes, secret: bytes | None, transcript: bytes,
                encrypt: bool) -> SessionKeys:
    """With a secret, an attacker must know it as well as break the exchange; the transcript as
    salt makes any tampering with INFO or HELLO end in different keys on the two sides."""
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_SIZE, salt=transcript,
               info=KEYS_INFO).derive(shared + (secret or b""))
    return SessionKeys(okm[:KEY_SIZE], okm[KEY_SIZE:], encrypt)


def sign_hello(key: Ed25519PrivateKey, hello_th: bytes) -> str:
    return _encode(key.sign(DOMAIN_PROOF + hello_th))


def verify_hello_signature(trusted: Sequence[Ed25519PublicKey], proof: object,
                           hello_th: bytes) -> Ed25519PublicKey:
    """Returns the key that verified, so the caller can hold the ticket to that same key."""
    signature = _decode(proof, SIGNATURE_SIZE)
    if signature is not None:
        for key in trusted:
            try:
                key.verify(signature, DOMAIN_PROOF + hello_th)
            except InvalidSignature:
                continue
            return key
    raise AuthenticationFailed("the sender could not prove it holds the ticket's signing key")


def _confirm_key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=CONFIRM_INFO).derive(secret)


def secret_proof(secret: bytes, hello_th: bytes) -> str:
    """Binds this connection's fresh keys to the secret: a HELLO replayed elsewhere fails."""
    return _encode(hmac.new(_confirm_key(secret), hello_th, hashlib.sha256).digest())


def verify_secret_proof(secret: bytes, proof: object, hello_th: bytes) -> None:
    mac = _decode(proof, hashlib.sha256().digest_size)
    expected = hmac.new(_confirm_key(secret), hello_th, hashlib.sha256).digest()
    if mac is None or not hmac.compare_digest(mac, expected):
        raise AuthenticationFailed("the sender does not hold this transfer's secret")


def sign_accept(key: Ed25519PrivateKey, th: bytes) -> str:
    return _encode(key.sign(DOMAIN_RECEIVER + th))


def verify_accept_signature(expected: Ed25519PublicKey, proof: object, th: bytes) -> None:
    signature = _decode(proof, SIGNATURE_SIZE)
    try:
        if signature is None:
            raise InvalidSignature
        expected.verify(signature, DOMAIN_RECEIVER + th)
    except InvalidSignature:
        raw = expected.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        raise AuthenticationFailed(
            f"the receiver could not prove it holds key ed25519:{_encode(raw)}") from None


def parse_secret(text: str) -> bytes:
    """The secret's text form as given by an operator; the message never repeats the text."""
    size = 2 * SECRET_SIZE
    if (not isinstance(text, str) or len(text) != size
            or any(c not in "0123456789abcdefABCDEF" for c in text)):
        raise ValueError(f"a transfer secret must be {size} hex digits ({SECRET_SIZE} bytes)")
    return bytes.fromhex(text)


def new_secret() -> str:
    return secrets.token_hex(SECRET_SIZE)


def nonce(kind: int, value: int) -> bytes:
    """Unique per key as long as offsets and control sequence numbers only grow in a
    direction; ``kind`` keeps data, END and control frames apart."""
    return struct.pack("<IQ", kind, value)


class Sealer:
    """Seals or opens frames of one direction of one connection with AES-256-GCM."""

    def __init__(self, key: bytes, encrypt: bool) -> None:
        self._aead = AESGCM(key)
        self.encrypt = encrypt

    def seal(self, header: bytes, payload: bytes, kind: int,
             value: int) -> tuple[bytes, bytes]:
        """Returns the payload to send and its tag. Unencrypted, the tag is a GMAC over header and
        payload, which costs far less than encrypting a stream the operator does not need hidden."""
        if self.encrypt:
            sealed = self._aead.encrypt(nonce(kind, value), payload, header)
            return sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
        return payload, self._aead.encrypt(nonce(kind, value), b"", header + payload)

    def open(self, header: bytes, payload: bytes, tag: bytes, kind: int, value: int) -> bytes:
        """The payload as sealed, or ``IntegrityError``: a frame that fails is never used."""
        try:
            if len(tag) != TAG_SIZE:
                raise InvalidTag
            if self.encrypt:
                return self._aead.decrypt(nonce(kind, value), payload + tag, header)
            self._aead.decrypt(nonce(kind, value), tag, header + payload)
        except InvalidTag:
            raise IntegrityError(
                f"frame (kind {kind}, at {value}) failed its authentication tag") from None
        return payload
