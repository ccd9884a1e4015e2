"""Tickets: what a valid one carries, and every way an invalid one is refused."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.transfer.errors import TicketRefused
from ployz.transfer.tickets import (
    DOMAIN,
    Target,
    Ticket,
    sign,
    verify,
)

KEY = Ed25519PrivateKey.generate()
# expires a day after import: long after any test run, however slow the machine
TICKET = Ticket("t-1", Target("zfs", "tank/vol"), time.time() + 86400, toguid=7, fromguid=None)


def test_valid_ticket_round_trips() -> None:
    assert verify(sign(TICKET, KEY), KEY.public_key()) == TICKET


def test_other_key_expired_and_tampered_tickets_are_refused() -> None:
    with pytest.raises(TicketRefused, match="trusted key"):
        verify(sign(TICKET, Ed25519PrivateKey.generate()), KEY.public_key())
    expired = Ticket("t-1", TICKET.target, time.time() - 1)
    with pytest.raises(TicketRefused, match="expired"):
        verify(sign(expired, KEY), KEY.public_key())
    payload, signature = sign(TICKET, KEY).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["target"]["name"] = "tank/other"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(TicketRefused, match="trusted key"):
        verify(f"{forged}.{signature}", KEY.public_key())


@pytest.mark.parametrize("token", [None, "", 5, "abc", "a.b.c", "!!!.???", "x" * 5000])
def test_malformed_tickets_are_refused(token: object) -> None:
    with pytest.raises(TicketRefused):
        verify(token, KEY.public_key())


def _signed(body: dict) -> str:
    payload = json.dumps(body).encode()
    b64 = base64.urlsafe_b64encode
    return (b64(payload).rstrip(b"=").decode() + "."
            + b64(KEY.sign(DOMAIN + payload)).rstrip(b"=").decode())


@pytest.mark.parametrize("body", [
    {"v": 2},
    {"v": 1, "transfer_id": "", "expires_at": 1e12, "target": {"kind": "file", "name": "/x"}},
    {"v": 1, "transfer_id": "t", "expires_at": "soon", "target": {"kind": "file", "name": "/x"}},
    {"v": 1, "transfer_id": "t", "expires_at": 1e12, "target": {"kind": "nfs", "name": "/x"}},
    {"v": 1, "transfer_id": "t", "expires_at": 1e12, "target": {"kind": "zfs", "name": "p"},
     "toguid": -1},
])
def test_signed_but_malformed_payloads_are_refused(body: dict) -> None:
    with pytest.raises(TicketRefused):
        verify(_signed(body), KEY.public_key())


@pytest.mark.parametrize("expiry", [float("inf"), float("nan"), 10**400])
def test_a_ticket_that_would_never_expire_is_refused(expiry: float) -> None:
    """JSON spells Infinity and NaN, and integers no float holds (a fuzzer's finding: a
    receiver took a ticket expiring at inf)."""
    body = {"v": 1, "transfer_id": "t", "expires_at": expiry,
            "target": {"kind": "file", "name": "/x"}}
    with pytest.raises(TicketRefused, match="expiry is not a time"):
        verify(_signed(body), KEY.public_key())


def test_signature_is_domain_separated() -> None:
    payload, _ = sign(TICKET, KEY).split(".")
    raw = base64.urlsafe_b64decode(payload + "==")
    plain = base64.urlsafe_b64encode(KEY.sign(raw)).rstrip(b"=").decode()
    with pytest.raises(TicketRefused):
        verify(f"{payload}.{plain}", KEY.public_key())
