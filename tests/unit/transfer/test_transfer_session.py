"""The v2 handshake's cryptography: agreeing keys, proofs bound to one connection, sealed frames."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ployz.transfer.errors import (
    AuthenticationFailed,
    ChecksumMismatch,
    IntegrityError,
    ProtocolError,
    TicketRefused,
)
from ployz.transfer.session import (
    KIND_CONTROL,
    KIND_DATA,
    KIND_END,
    SECRET_SIZE,
    Ephemeral,
    Sealer,
    SessionKeys,
    canonical,
    derive_keys,
    hello_transcript,
    new_secret,
    nonce,
    parse_secret,
    secret_proof,
    session_transcript,
    sign_accept,
    sign_hello,
    verify_accept_signature,
    verify_hello_signature,
    verify_secret_proof,
)

TICKET_KEY = Ed25519PrivateKey.generate()
SECRET = parse_secret(new_secret())
HEADER = bytes(range(32))
PAYLOAD = b'{"type":"accept","codec":"zstd"}' * 4


def info_payload(kx: str) -> bytes:
    return canonical({"type": "info", "protocol": 2, "target": {"kind": "zfs", "name": "tank/v"},
                      "kx": kx})


def make_hello(kx: str, info: bytes, auth: str = "signature", **fields: Any) -> dict[str, Any]:
    hello = {"type": "hello", "protocol": 2, "ticket": "t.s", "transfer_id": "t-1",
             "frame_size": 4194304, "codecs": ["none", "zstd"], "stream": {"toguid": 7},
             "kx": kx, "encrypt": False, "auth": auth, **fields}
    th = hello_transcript(info, hello)
    hello["proof"] = sign_hello(TICKET_KEY, th) if auth == "signature" else secret_proof(SECRET, th)
    return hello


def handshake(secret: bytes | None = None,
              encrypt: bool = False) -> tuple[SessionKeys, SessionKeys]:
    """Both sides of one connection, each computing from what it sent and what it received."""
    receiver_eph, sender_eph = Ephemeral(), Ephemeral()
    info = info_payload(receiver_eph.public_text)
    hello = make_hello(sender_eph.public_text, info, "secret" if secret else "signature")
    hello_bytes = canonical(hello)
    th = session_transcript(info, hello_bytes)
    sender_keys = derive_keys(sender_eph.exchange(receiver_eph.public_text), secret, th, encrypt)
    receiver_keys = derive_keys(receiver_eph.exchange(hello["kx"]), secret, th, encrypt)
    return sender_keys, receiver_keys


@pytest.mark.parametrize("secret", [None, SECRET])
def test_both_sides_derive_the_same_keys_one_per_direction(secret: bytes | None) -> None:
    sender_keys, receiver_keys = handshake(secret, encrypt=True)
    assert sender_keys == receiver_keys
    assert len(sender_keys.sender) == len(sender_keys.receiver) == 32
    assert sender_keys.sender != sender_keys.receiver
    # a frame the receiver seals opens with the sender's view of the keys
    header, tag = Sealer(receiver_keys.receiver, True).seal(HEADER, PAYLOAD, KIND_CONTROL, 0)
    assert Sealer(sender_keys.receiver, True).open(HEADER, header, tag, KIND_CONTROL, 0) == PAYLOAD
    assert sender_keys.sender.hex() not in repr(sender_keys)


def test_another_secret_ephemeral_or_transcript_gives_other_keys() -> None:
    a, b = Ephemeral(), Ephemeral()
    shared = a.exchange(b.public_text)
    th = session_transcript(b"info", b"hello")
    base = derive_keys(shared, SECRET, th, False)
    assert derive_keys(shared, SECRET, th, False) == base
    other_secret = derive_keys(shared, bytes(SECRET_SIZE), th, False)
    no_secret = derive_keys(shared, None, th, False)
    other_ephemeral = derive_keys(Ephemeral().exchange(b.public_text), SECRET, th, False)
    other_transcript = derive_keys(shared, SECRET, session_transcript(b"info", b"hellO"), False)
    keys = {k.sender for k in (base, other_secret, no_secret, other_ephemeral, other_transcript)}
    assert len(keys) == 5
    assert handshake()[0] != handshake()[0]  # fresh ephemerals: every connection its own keys


def test_a_hello_signature_for_one_info_fails_on_another_connection() -> None:
    sender_eph = Ephemeral()
    info = info_payload(Ephemeral().public_text)
    hello = make_hello(sender_eph.public_text, info)
    trusted = [Ed25519PrivateKey.generate().public_key(), TICKET_KEY.public_key()]
    th = hello_transcript(info, hello)
    assert verify_hello_signature(trusted, hello["proof"], th) == TICKET_KEY.public_key()
    replayed = hello_transcript(info_payload(Ephemeral().public_text), hello)
    with pytest.raises(AuthenticationFailed, match="signing key"):
        verify_hello_signature(trusted, hello["proof"], replayed)


def test_a_secret_proof_for_one_info_fails_on_another_connection() -> None:
    info = info_payload(Ephemeral().public_text)
    hello = make_hello(Ephemeral().public_text, info, "secret")
    verify_secret_proof(SECRET, hello["proof"], hello_transcript(info, hello))
    replayed = hello_transcript(info_payload(Ephemeral().public_text), hello)
    with pytest.raises(AuthenticationFailed, match="secret"):
        verify_secret_proof(SECRET, hello["proof"], replayed)
    with pytest.raises(AuthenticationFailed, match="secret"):
        verify_secret_proof(parse_secret(new_secret()), hello["proof"],
                            hello_transcript(info, hello))


def test_a_signature_by_an_untrusted_key_fails() -> None:
    info = info_payload(Ephemeral().public_text)
    hello = make_hello(Ephemeral().public_text, info)
    th = hello_transcript(info, hello)
    with pytest.raises(AuthenticationFailed):
        verify_hello_signature([Ed25519PrivateKey.generate().public_key()], hello["proof"], th)
    with pytest.raises(AuthenticationFailed):
        verify_hello_signature([], hello["proof"], th)


@pytest.mark.parametrize("field,value", [("transfer_id", "t-2"), ("encrypt", True),
                                         ("auth", "secret"), ("stream", {"toguid": 8}),
                                         ("kx", Ephemeral().public_text), ("extra", 1)])
def test_a_modified_hello_field_invalidates_its_proof(field: str, value: object) -> None:
    info = info_payload(Ephemeral().public_text)
    hello = make_hello(Ephemeral().public_text, info)
    assert hello_transcript(info, hello) == hello_transcript(info, {**hello, "proof": "other"})
    tampered = {**hello, field: value}
    with pytest.raises(AuthenticationFailed):
        verify_hello_signature([TICKET_KEY.public_key()], hello["proof"],
                               hello_transcript(info, tampered))


def test_accept_signature_proves_the_receiver_for_this_session_only() -> None:
    key = Ed25519PrivateKey.generate()
    th = session_transcript(b"info", b"hello")
    proof = sign_accept(key, th)
    verify_accept_signature(key.public_key(), proof, th)
    with pytest.raises(AuthenticationFailed, match="receiver could not prove"):
        verify_accept_signature(key.public_key(), proof, session_transcript(b"info", b"other"))
    with pytest.raises(AuthenticationFailed):
        verify_accept_signature(Ed25519PrivateKey.generate().public_key(), proof, th)
    with pytest.raises(AuthenticationFailed):  # a HELLO proof is not an ACCEPT proof
        verify_accept_signature(key.public_key(), sign_hello(key, th), th)
    with pytest.raises(AuthenticationFailed):
        verify_accept_signature(key.public_key(), None, th)


@pytest.mark.parametrize("encrypt", [False, True])
def test_seal_open_round_trip(encrypt: bool) -> None:
    key = AESGCM.generate_key(bit_length=256)
    wire, tag = Sealer(key, encrypt).seal(HEADER, PAYLOAD, KIND_DATA, 1 << 40)
    assert len(wire) == len(PAYLOAD) and len(tag) == 16
    assert (wire != PAYLOAD) if encrypt else (wire == PAYLOAD)
    assert Sealer(key, encrypt).open(HEADER, wire, tag, KIND_DATA, 1 << 40) == PAYLOAD
    empty, empty_tag = Sealer(key, encrypt).seal(HEADER, b"", KIND_END, 5)
    assert Sealer(key, encrypt).open(HEADER, empty, empty_tag, KIND_END, 5) == b""


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("part", ["header", "payload", "tag"])
@pytest.mark.parametrize("where", [0, -1])
def test_a_flipped_bit_fails_open(encrypt: bool, part: str, where: int) -> None:
    key = AESGCM.generate_key(bit_length=256)
    wire, tag = Sealer(key, encrypt).seal(HEADER, PAYLOAD, KIND_CONTROL, 3)
    parts = {"header": HEADER, "payload": wire, "tag": tag}
    parts[part] = flip(parts[part], where % len(parts[part]))
    with pytest.raises(IntegrityError, match="failed its authentication tag"):
        Sealer(key, encrypt).open(parts["header"], parts["payload"], parts["tag"], KIND_CONTROL, 3)


@pytest.mark.parametrize("encrypt", [False, True])
def test_wrong_nonce_key_or_tag_length_fails_open(encrypt: bool) -> None:
    key = AESGCM.generate_key(bit_length=256)
    wire, tag = Sealer(key, encrypt).seal(HEADER, PAYLOAD, KIND_DATA, 4096)
    opener = Sealer(key, encrypt)
    for kind, value in ((KIND_END, 4096), (KIND_CONTROL, 4096), (KIND_DATA, 4097)):
        with pytest.raises(IntegrityError):
            opener.open(HEADER, wire, tag, kind, value)
    with pytest.raises(IntegrityError):
        Sealer(AESGCM.generate_key(bit_length=256), encrypt).open(HEADER, wire, tag, KIND_DATA,
                                                                  4096)
    with pytest.raises(IntegrityError):
        opener.open(HEADER, wire, tag[:8], KIND_DATA, 4096)


def test_authenticated_mode_tag_is_gcm_over_header_and_payload_known_answer() -> None:
    key = bytes(range(32))
    header = bytes(range(100, 132))
    payload = b"ployz"
    expected_nonce = b"\x01\x00\x00\x00" + (0x0102030405060708).to_bytes(8, "little")
    assert nonce(KIND_DATA, 0x0102030405060708) == expected_nonce
    wire, tag = Sealer(key, False).seal(header, payload, KIND_DATA, 0x0102030405060708)
    assert wire == payload
    assert tag == AESGCM(key).encrypt(expected_nonce, b"", header + payload)
    assert tag.hex() == "cd017c7a0b8db3e63d140eea73d75cba"
    encrypted, encrypted_tag = Sealer(key, True).seal(header, payload, KIND_DATA,
                                                      0x0102030405060708)
    assert encrypted + encrypted_tag == AESGCM(key).encrypt(expected_nonce, payload, header)


def test_nonce_layout() -> None:
    assert nonce(KIND_CONTROL, 2) == struct.pack("<IQ", 3, 2)
    assert len(nonce(KIND_END, 2**64 - 1)) == 12


ZERO = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize("kx", [None, 7, b"x" * 32, "", "not base64!",
                                base64.b64encode(bytes(31)).decode(),
                                base64.b64encode(bytes(33)).decode(),
                                ZERO.rstrip("="), ZERO[:-2] + "B=", "\u00e9" * 44])
def test_a_malformed_key_exchange_value_is_a_protocol_error(kx: object) -> None:
    with pytest.raises(ProtocolError, match="key exchange value is malformed"):
        Ephemeral().exchange(kx)


@pytest.mark.parametrize("point", [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
])
def test_a_low_order_peer_key_fails_authentication(point: bytes) -> None:
    with pytest.raises(AuthenticationFailed):
        Ephemeral().exchange(base64.b64encode(point).decode())


@pytest.mark.parametrize("proof", [None, 1, "", "%%%", base64.b64encode(bytes(63)).decode(),
                                   base64.b64encode(bytes(64)).decode(), ["a"]])
def test_malformed_proofs_fail_authentication(proof: object) -> None:
    th = hello_transcript(b"info", {"type": "hello"})
    with pytest.raises(AuthenticationFailed):
        verify_hello_signature([TICKET_KEY.public_key()], proof, th)
    with pytest.raises(AuthenticationFailed):
        verify_secret_proof(SECRET, proof, th)
    with pytest.raises(AuthenticationFailed):
        verify_accept_signature(TICKET_KEY.public_key(), proof, th)


def test_secret_text() -> None:
    text = new_secret()
    assert len(parse_secret(text)) == SECRET_SIZE
    assert parse_secret(text.upper()) == parse_secret(text)
    assert new_secret() != text
    for bad in ("", text[:-2], text + "00", text[:-1] + "g", " " + text[1:], "ab " * 21 + "a"):
        with pytest.raises(ValueError, match="64 hex digits") as caught:
            parse_secret(bad)
        assert text[2:12] not in str(caught.value)  # a secret is never echoed


def test_error_kinds() -> None:
    assert issubclass(IntegrityError, ChecksumMismatch) and IntegrityError.retryable
    assert issubclass(AuthenticationFailed, TicketRefused) and not AuthenticationFailed.retryable
