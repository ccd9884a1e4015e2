"""Join tokens: a valid one round-trips; forged, expired and malformed ones are refused, each
with the error that says what to do, and parsing never fails with anything but MalformedToken."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ployz.deploy.membership.tokens import (
    MAX_TOKEN_BYTES,
    PREFIX,
    ExpiredToken,
    ForgedToken,
    JoinToken,
    MalformedToken,
    TokenError,
    TokenPeer,
    issue,
    parse,
    verify,
)
from ployz.transfer.keys import public_key_text

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
NOW = 1_750_000_000.0
PEER = TokenPeer(id="machine-a", overlay_ip="10.210.1.1",
                 wireguard_key=base64.b64encode(bytes(range(32))).decode(),
                 endpoint="192.0.2.10:51820")


def _token(**changes: object) -> JoinToken:
    fields: dict[str, object] = {
        "version": 1, "cluster": "prod", "invite": "0123456789abcdef" * 2,
        "expires": int(NOW) + 3600, "control": "nats://ployz-1:s3cret@192.0.2.10:4222",
        "trust": (public_key_text(KEY.public_key()),), "overlay": "10.210.0.0/16",
        "peers": (PEER,),
    }
    return JoinToken.model_validate(fields | changes)


TOKEN = _token()
TEXT = issue(TOKEN, KEY)


def _parts(text: str) -> tuple[str, str]:
    payload, signature = text.removeprefix(PREFIX).split(".")
    return payload, signature


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _with_payload(body: object, signature: str | None = None) -> str:
    return f"{PREFIX}{_b64(json.dumps(body).encode())}.{signature or _parts(TEXT)[1]}"


def test_an_issued_token_verifies_to_what_was_issued() -> None:
    assert TEXT.startswith(PREFIX)
    assert verify(TEXT, [KEY.public_key()], NOW) == TOKEN
    signed = parse(f"  \n{TEXT}\t\n")
    assert signed.token == TOKEN
    assert len(signed.signature) == 64
    assert verify(TEXT.encode(), [OTHER_KEY.public_key(), KEY.public_key()], NOW) == TOKEN


def test_only_a_key_the_token_trusts_can_issue_it() -> None:
    with pytest.raises(ValueError, match="not one of the token's trusted keys"):
        issue(TOKEN, OTHER_KEY)


def test_a_token_too_long_to_be_accepted_is_not_issued() -> None:
    crowd = tuple(PEER.model_copy(update={"id": f"machine-{i}"}) for i in range(200))
    with pytest.raises(ValueError, match=f"more than the {MAX_TOKEN_BYTES}"):
        issue(_token(peers=crowd), KEY)


def test_a_token_signed_by_another_key_is_forged() -> None:
    other = _token(trust=(public_key_text(OTHER_KEY.public_key()),))
    with pytest.raises(ForgedToken, match="not signed by an operator of cluster 'prod'"):
        verify(issue(other, OTHER_KEY), [KEY.public_key()], NOW)


def test_the_tokens_own_trust_claim_does_not_count() -> None:
    """A token listing both keys, signed by the one the cluster does not trust."""
    both = _token(trust=tuple(public_key_text(k.public_key()) for k in (KEY, OTHER_KEY)))
    with pytest.raises(ForgedToken):
        verify(issue(both, OTHER_KEY), [KEY.public_key()], NOW)


def test_no_trusted_key_verifies_nothing() -> None:
    with pytest.raises(ForgedToken):
        verify(TEXT, [], NOW)


_RAW_PAYLOAD = base64.urlsafe_b64decode(_parts(TEXT)[0] + "==")


@pytest.mark.parametrize("before", [b'"invite":"', b'"expires":1750', b'"10.210.1.'])
def test_a_changed_payload_byte_is_forged(before: bytes) -> None:
    """A digit changed to another keeps the payload a well-formed token of the same shape."""
    raw = bytearray(_RAW_PAYLOAD)
    index = _RAW_PAYLOAD.index(before) + len(before)
    raw[index] = ord("1") if raw[index] != ord("1") else ord("2")
    text = f"{PREFIX}{_b64(bytes(raw))}.{_parts(TEXT)[1]}"
    assert parse(text).token != TOKEN
    with pytest.raises(ForgedToken):
        verify(text, [KEY.public_key()], NOW)


def test_a_signature_from_another_token_is_forged() -> None:
    other = issue(_token(invite="f" * 32), KEY)
    payload, _ = _parts(TEXT)
    with pytest.raises(ForgedToken):
        verify(f"{PREFIX}{payload}.{_parts(other)[1]}", [KEY.public_key()], NOW)


def test_a_signature_over_the_payload_without_the_domain_is_forged() -> None:
    """A signature the same key made for some other purpose over the same bytes."""
    payload, _ = _parts(TEXT)
    raw = base64.urlsafe_b64decode(payload + "==")
    with pytest.raises(ForgedToken):
        verify(f"{PREFIX}{payload}.{_b64(KEY.sign(raw))}", [KEY.public_key()], NOW)


def test_an_expired_token_says_when_and_what_to_do() -> None:
    expires = TOKEN.expires
    for now in (float(expires), expires + 1.5):
        with pytest.raises(ExpiredToken) as caught:
            verify(TEXT, [KEY.public_key()], now)
        assert str(caught.value) == (
            "the join token expired at 2025-06-15 16:06:40 UTC; "
            "ask for a new one with `ployzctl machine invite`")
    assert verify(TEXT, [KEY.public_key()], expires - 0.5) == TOKEN


def test_a_forged_token_is_reported_forged_even_when_also_expired() -> None:
    with pytest.raises(ForgedToken):
        verify(TEXT, [OTHER_KEY.public_key()], NOW + 10 * 86400)


def test_every_refusal_is_a_token_error() -> None:
    for error in (MalformedToken("x"), ForgedToken("c"), ExpiredToken(0)):
        assert isinstance(error, TokenError)
        assert isinstance(error, ValueError)


_PAYLOAD, _SIGNATURE = _parts(TEXT)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "must start with 'ployz-join-1.'"),
    ("ployz-join-2." + TEXT.removeprefix(PREFIX), "must start with 'ployz-join-1.'"),
    (TEXT.removeprefix(PREFIX), "must start with 'ployz-join-1.'"),
    (f"{PREFIX}{_PAYLOAD}", "found 1 part"),
    (f"{TEXT}.{_SIGNATURE}", "found 3 part"),
    (f"{PREFIX}{_PAYLOAD}=.{_SIGNATURE}", "payload is not base64url"),
    (f"{PREFIX}{_PAYLOAD}!.{_SIGNATURE}", "payload is not base64url"),
    (f"{PREFIX}{_PAYLOAD[:-1]}.{_SIGNATURE}", "payload is not base64url"),  # 4n+1 characters
    (f"{PREFIX}{_PAYLOAD}.{_SIGNATURE}==", "signature is not base64url"),
    (f"{PREFIX}{_PAYLOAD}.{_b64(bytes(61))}", "the signature is 61 bytes"),
    (f"{PREFIX}{_b64(b'not json')}.{_SIGNATURE}", "the payload is not JSON"),
    (f"{PREFIX}{_b64(bytes([0xff, 0xfe]))}.{_SIGNATURE}", "the payload is not JSON"),
    (f"{PREFIX}{_b64(b'[1, 2]')}.{_SIGNATURE}", "the payload: Input should be an object"),
    ("x" * (MAX_TOKEN_BYTES + 1), "more than the 16384 accepted"),
    (f"{TEXT:<{MAX_TOKEN_BYTES + 1}}", "more than the 16384 accepted"),
    ("ployz-join-1.é.x".encode(), "not ASCII text"),
])
def test_malformed_tokens_say_what_is_wrong(text: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedToken, match=r"^not a valid join token: ") as caught:
        parse(text)
    assert reason in caught.value.reason


def test_a_non_canonical_base64_spelling_is_malformed() -> None:
    """The last character of a base64 text can carry unused bits; a token has one spelling."""
    payload = _b64(b"{}")  # 'e30': its last character carries 2 unused bits
    assert payload == "e30"
    with pytest.raises(MalformedToken, match="payload is not base64url"):
        parse(f"{PREFIX}e31.{_SIGNATURE}")


def _body(**changes: object) -> dict[str, object]:
    body = json.loads(TOKEN.model_dump_json())
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


@pytest.mark.parametrize(("body", "field"), [
    (_body(version=2), "'version'"),
    (_body(cluster="has space"), "'cluster'"),
    (_body(invite="0123"), "'invite'"),
    (_body(invite="0123456789ABCDEF" * 2), "'invite'"),
    (_body(expires="1750003600"), "'expires'"),  # strict: a number spelled as text
    (_body(expires=1750003600.0), "'expires'"),
    (_body(expires=-1), "'expires'"),
    (_body(control=""), "'control'"),
    (_body(trust=[]), "'trust'"),
    (_body(trust=["ed25519:not-base64"]), "'trust.0'"),
    (_body(overlay="10.210.0.0/33"), "'overlay'"),
    (_body(peers=[{"id": "a", "overlay_ip": "10.210.1.1", "wireguard_key": "short",
                   "endpoint": "192.0.2.1:51820"}]), "'peers.0.wireguard_key'"),
    (_body(peers=[PEER.model_dump() | {"endpoint": "nowhere"}]), "'peers.0.endpoint'"),
    (_body(peers=[PEER.model_dump() | {"extra": 1}]), "'peers.0.extra'"),
    (_body(surprise=True), "'surprise'"),
    ({"version": 1}, "'cluster'"),
])
def test_a_schema_error_names_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(MalformedToken, match=f"field {field}"):
        parse(_with_payload(body))


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n"


@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.text(alphabet=_ALPHABET, max_size=300).map(lambda tail: PREFIX + tail),
    st.binary(max_size=300).map(lambda raw: f"{PREFIX}{_b64(raw)}.{_SIGNATURE}"),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda children: st.lists(children, max_size=4)
                 | st.dictionaries(st.sampled_from([*TOKEN.model_dump(), "x"]), children,
                                   max_size=8),
                 max_leaves=30).map(lambda body: _with_payload(body)),
    st.tuples(st.integers(0, len(TEXT) - 1), st.characters()).map(
        lambda change: TEXT[:change[0]] + change[1] + TEXT[change[0] + 1:]),
))
def test_parse_either_returns_or_raises_malformed_token(text: str | bytes) -> None:
    try:
        signed = parse(text)
    except MalformedToken:
        return
    assert isinstance(signed.token, JoinToken)
