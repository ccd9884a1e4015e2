"""Transfer tickets: Ed25519-signed permissions to write one stream into one target.

A ticket names the transfer id, the target (a file path or a ZFS dataset), for ZFS the guids of
the snapshot being sent and of its incremental base, and an expiry. A probe of the link names no
place: its target is the transfer id, received into nothing. The receiver trusts a set of
public keys and accepts a stream only with a valid ticket, signed by one of them, for exactly the
target it serves.

Encoding: ``base64url(payload) "." base64url(signature)``, where payload is canonical JSON
(sorted keys, no spaces) and the signature covers ``b"ployz-ticket-v1\\0" + payload`` so that a
ticket signature cannot be confused with any other use of the same key.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ployz.transfer.errors import TicketRefused

DOMAIN = b"ployz-ticket-v1\0"
MAX_TICKET = 4096

TargetKind = Literal["file", "zfs", "probe"]


class UntrustedSignature(TicketRefused):
    """The ticket's signature is not that of the key tried (another trusted key may match)."""


@dataclass(frozen=True)
class Target:
    """Where a stream goes: a file path, a ZFS dataset (the received snapshot's dataset), or
    nowhere for a probe of the link (named by its transfer id)."""

    kind: TargetKind
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}

    @classmethod
    def from_dict(cls, value: Any) -> Target:
        if (not isinstance(value, dict) or value.get("kind") not in ("file", "zfs", "probe")
                or not isinstance(value.get("name"), str) or not value["name"]):
            raise TicketRefused("ticket target is malformed")
        return cls(value["kind"], value["name"])


@dataclass(frozen=True)
class Ticket:
    transfer_id: str
    target: Target
    expires_at: float
    toguid: int | None = None
    fromguid: int | None = None

    def payload(self) -> bytes:
        body = {"v": 1, "transfer_id": self.transfer_id, "target": self.target.as_dict(),
                "expires_at": self.expires_at, "toguid": self.toguid, "fromguid": self.fromguid}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(ticket: Ticket, key: Ed25519PrivateKey) -> str:
    payload = ticket.payload()
    return f"{_b64(payload)}.{_b64(key.sign(DOMAIN + payload))}"


def _optional_guid(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise TicketRefused(f"ticket field {key} is malformed")


def verify_any(token: Any, trusted: Sequence[Ed25519PublicKey],
               now: float | None = None) -> tuple[Ticket, Ed25519PublicKey]:
    """Checks the ticket against each trusted key; returns it with the key that signed it, which
    the sender's proof must then be made with. Raises ``TicketRefused``."""
    for key in trusted:
        try:
            return verify(token, key, now), key
        except UntrustedSignature:
            continue
    raise UntrustedSignature("ticket is not signed by any trusted key")


def _expiry(value: Any) -> float:
    """The ticket's expiry as a finite time: JSON also spells ``Infinity``, ``NaN`` and
    integers beyond any float, which would make a ticket that never expires (NaN compares
    false with every time)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TicketRefused("ticket has no expiry")
    try:
        expiry = float(value)
    except OverflowError:
        raise TicketRefused("ticket's expiry is not a time") from None
    if not math.isfinite(expiry):
        raise TicketRefused("ticket's expiry is not a time")
    return expiry


def verify(token: Any, trusted: Ed25519PublicKey, now: float | None = None) -> Ticket:
    """Checks signature and expiry and returns the ticket; raises ``TicketRefused``."""
    if not isinstance(token, str) or not token:
        raise TicketRefused("no ticket presented")
    if len(token) > MAX_TICKET or token.count(".") != 1:
        raise TicketRefused("ticket is malformed")
    payload_text, signature_text = token.split(".")
    try:
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (binascii.Error, ValueError):
        raise TicketRefused("ticket is not valid base64url") from None
    try:
        trusted.verify(signature, DOMAIN + payload)
    except InvalidSignature:
        raise UntrustedSignature("ticket is not signed by the trusted key") from None
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TicketRefused("ticket payload is not JSON") from None
    if not isinstance(body, dict) or body.get("v") != 1:
        raise TicketRefused("unsupported ticket version")
    transfer_id, expires_at = body.get("transfer_id"), body.get("expires_at")
    if not isinstance(transfer_id, str) or not transfer_id:
        raise TicketRefused("ticket has no transfer id")
    expiry = _expiry(expires_at)
    if expiry <= (time.time() if now is None else now):
        raise TicketRefused(f"ticket for transfer {transfer_id} expired")
    return Ticket(transfer_id, Target.from_dict(body.get("target")), expiry,
                  _optional_guid(body, "toguid"), _optional_guid(body, "fromguid"))
