"""Join tokens: what ``ployzctl machine invite`` prints and ``ployzctl machine join`` consumes.

A token carries what a new machine needs before it can reach anything: the cluster's name, the
control-plane URL (with its credentials), the operator keys, the overlay network and its peers.
It is signed by an operator key and expires; that it is used only once is enforced by the
control plane's invite record (``invite``), not here.

Text form: ``ployz-join-1.`` + base64url(payload) + ``.`` + base64url(signature), without
padding. The payload is the token's JSON; the signature is Ed25519 over ``DOMAIN`` followed by
the payload bytes exactly as carried (never re-serialised), so the same key's signatures for
agent requests or transfer tickets can never pass for a join token, nor the other way round.

The joining side reads the token in two steps: :func:`parse` (no trust needed) gives it the
control-plane URL; it reads the cluster's operator keys there and only then calls :func:`verify`
with those keys. The ``trust`` a token carries is a claim of its issuer and proves nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from ployz.control.models import Endpoint, Identifier, IPAddress, Network, WireGuardKey
from ployz.transfer.keys import parse_public_key, public_key_text

PREFIX = "ployz-join-1."
DOMAIN = b"ployz-join-1\0"
MAX_TOKEN_BYTES = 16 * 1024
"""Longest accepted text: far above a real token (about 200 bytes per peer), small enough that a
pasted file or a hostile input is refused before it is decoded."""
SIGNATURE_BYTES = 64

_BASE64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


class TokenError(ValueError):
    """A join token that cannot be used; the message says why and what to do."""


class MalformedToken(TokenError):
    """The text is not a join token of this version: it was mangled or is something else."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not a valid join token: {reason}")
        self.reason = reason


class ForgedToken(TokenError):
    """The signature is not that of any operator key the cluster trusts."""

    def __init__(self, cluster: str) -> None:
        super().__init__(f"the join token is not signed by an operator of cluster {cluster!r}")
        self.cluster = cluster


class ExpiredToken(TokenError):
    def __init__(self, expires: int) -> None:
        at = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"the join token expired at {at}; ask for a new one with `ployzctl machine invite`"
        )
        self.expires = expires


def _check_public_key(value: str) -> str:
    parse_public_key(value)  # BadKey is a ValueError: pydantic reports it against the field
    return value


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenPeer(_Payload):
    """A machine of the overlay as the new machine's WireGuard interface needs it."""

    id: Identifier
    overlay_ip: IPAddress
    wireguard_key: WireGuardKey
    endpoint: Endpoint


class JoinToken(_Payload):
    version: Literal[1]
    cluster: Identifier
    invite: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    expires: int = Field(ge=0)
    """Unix seconds."""
    control: str = Field(min_length=1)
    """The control-plane URL the new machine uses; may carry NATS credentials."""
    trust: tuple[Annotated[str, AfterValidator(_check_public_key)], ...] = Field(min_length=1)
    """Operator public keys, ``ed25519:BASE64``."""
    overlay: Network
    """The overlay network's CIDR."""
    peers: tuple[TokenPeer, ...]


@dataclass(frozen=True)
class SignedToken:
    """A parsed token, not yet verified: ``payload`` is exactly the bytes ``signature`` covers."""

    token: JoinToken
    payload: bytes
    signature: bytes


def issue(token: JoinToken, key: Ed25519PrivateKey) -> str:
    """The token's text form, signed by ``key``, which must be one of ``token.trust``.

    Raises ValueError if the key is not in the token's trust, or if the token is too long for
    :func:`parse` to accept (too many peers).
    """
    key_text = public_key_text(key.public_key())
    if key_text not in token.trust:
        raise ValueError(f"the signing key {key_text} is not one of the token's trusted keys")
    payload = token.model_dump_json().encode()
    text = f"{PREFIX}{_b64(payload)}.{_b64(key.sign(DOMAIN + payload))}"
    if len(text) > MAX_TOKEN_BYTES:
        raise ValueError(
            f"the join token would be {len(text)} bytes, more than the {MAX_TOKEN_BYTES} "
            f"a joining machine accepts ({len(token.peers)} peers)"
        )
    return text


def parse(text: str | bytes) -> SignedToken:
    """The token in ``text`` (surrounding whitespace ignored), its signature unchecked.

    Raises :class:`MalformedToken`, and nothing else, whatever ``text`` holds.
    """
    if len(text) > MAX_TOKEN_BYTES:
        raise MalformedToken(f"{len(text)} bytes, more than the {MAX_TOKEN_BYTES} accepted")
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedToken("it holds bytes that are not ASCII text") from None
    text = text.strip()
    if not text.startswith(PREFIX):
        raise MalformedToken(f"it must start with {PREFIX!r}")
    parts = text.removeprefix(PREFIX).split(".")
    if len(parts) != 2:
        raise MalformedToken(
            f"expected {PREFIX!r} followed by two base64url parts joined by '.', "
            f"found {len(parts)} part(s)"
        )
    payload = _unb64(parts[0], "payload")
    signature = _unb64(parts[1], "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise MalformedToken(
            f"the signature is {len(signature)} bytes; an Ed25519 signature is {SIGNATURE_BYTES}"
        )
    return SignedToken(_validate(payload), payload, signature)


def verify(text: str | bytes, trusted: Sequence[Ed25519PublicKey], now: float) -> JoinToken:
    """The token in ``text`` if one of ``trusted`` signed it and it has not expired at ``now``
    (unix seconds).

    ``trusted`` are the operator keys of the cluster as its control plane holds them, not the
    token's own ``trust``. Raises :class:`MalformedToken`, :class:`ForgedToken` or
    :class:`ExpiredToken`, in that order of checking: an expiry is reported only for a token an
    operator did sign.
    """
    signed = parse(text)
    if not any(_signed_by(key, signed) for key in trusted):
        raise ForgedToken(signed.token.cluster)
    if now >= signed.token.expires:
        raise ExpiredToken(signed.token.expires)
    return signed.token


def _signed_by(key: Ed25519PublicKey, signed: SignedToken) -> bool:
    try:
        key.verify(signed.signature, DOMAIN + signed.payload)
    except InvalidSignature:
        return False
    return True


def _validate(payload: bytes) -> JoinToken:
    try:
        # strict: a signed payload has one spelling of each value (no "5" or 5.0 for 5)
        return JoinToken.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        if error["type"] == "json_invalid":
            raise MalformedToken(f"the payload is not JSON ({error['msg']})") from None
        field = ".".join(str(part) for part in error["loc"])
        where = f"field {field!r}" if field else "the payload"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise MalformedToken(f"{where}: {error['msg']}{more}") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str, part: str) -> bytes:
    # The decoder would skip characters outside the alphabet and accept more than one spelling
    # of the same bytes; a token has exactly one text form.
    if _BASE64URL_RE.match(text):
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            pass
        else:
            if _b64(data) == text:
                return data
    raise MalformedToken(f"the {part} is not base64url without padding")

