"""Request signing and verification: who may call an agent, and only once per request.

A request envelope is ``{"id", "audience", "key", "method", "params", "nonce", "ts_ms", "sig"}``.
``sig`` is the Ed25519 signature, by the private half of ``key``, of :func:`signing_payload`: a
context string followed by the canonical JSON of every other field but ``id`` (which only pairs a
response with its request). ``audience`` is the machine id of the agent the request is meant for,
so a request captured on one machine cannot be played against another. The agent accepts a
request only if the key is one it trusts, the signature matches, ``ts_ms`` is within its window
of the agent's clock, and the nonce was never seen within that window (see the replay cache in
:mod:`ployz.agent.state`, which survives restarts).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ployz.transfer.keys import BadKey, parse_public_key, public_key_text

SIGNING_CONTEXT = b"ployz-agent-rpc-v1\n"
SIGNED_FIELDS = ("audience", "key", "method", "nonce", "params", "ts_ms")
DEFAULT_WINDOW_S = 120.0
_MAX_NONCE_CHARS = 64


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signing_payload(envelope: dict[str, Any]) -> bytes:
    body = {field: envelope[field] for field in SIGNED_FIELDS}
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return SIGNING_CONTEXT + canonical.encode()


def sign_request(
    key: Ed25519PrivateKey, audience: str, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """A signed envelope (without ``id``) for one call of ``method`` on agent ``audience``."""
    envelope: dict[str, Any] = {
        "audience": audience,
        "key": public_key_text(key.public_key()),
        "method": method,
        "params": params,
        "nonce": secrets.token_hex(16),
        "ts_ms": now_ms(),
    }
    envelope["sig"] = key.sign(signing_payload(envelope)).hex()
    return envelope


class AuthFailure(Exception):
    """Why a request was refused; ``reason`` becomes the wire code ``auth.<reason>``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReplayCache(Protocol):
    def remember(self, nonce: str, keep_until_ms: int, now_ms: int) -> bool:
        """Records the nonce until ``keep_until_ms``; False if it is already recorded."""
        ...


class RequestVerifier:
    """Checks a request envelope; raises :class:`AuthFailure` naming the first problem found."""

    def __init__(
        self,
        audience: str,
        trusted: Iterable[Ed25519PublicKey],
        replay_cache: ReplayCache,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        self.audience = audience
        self.window_ms = int(window_s * 1000)
        self._trusted = {public_key_text(key): key for key in trusted}
        self._replay_cache = replay_cache

    def verify(self, envelope: dict[str, Any], at_ms: int) -> None:
        self._check_shape(envelope)
        key = self._trusted.get(envelope["key"])
        if key is None:
            self._check_key_text(envelope["key"])
            raise AuthFailure("untrusted-key", f"key {envelope['key']} is not trusted here")
        try:
            key.verify(bytes.fromhex(envelope["sig"]), signing_payload(envelope))
        except (InvalidSignature, ValueError) as exc:
            raise AuthFailure(
                "bad-signature", "signature does not match the request (tampered?)"
            ) from exc
        if envelope["audience"] != self.audience:
            raise AuthFailure(
                "wrong-audience",
                f"request is meant for machine {envelope['audience']!r}, this is "
                f"{self.audience!r}",
            )
        skew_ms = at_ms - envelope["ts_ms"]
        if abs(skew_ms) > self.window_ms:
            raise AuthFailure(
                "expired",
                f"request timestamp is {skew_ms / 1000:+.1f} s from this agent's clock; the "
                f"window is {self.window_ms / 1000:g} s (stale request or clock skew)",
            )
        keep_until_ms = envelope["ts_ms"] + self.window_ms
        if not self._replay_cache.remember(envelope["nonce"], keep_until_ms, at_ms):
            raise AuthFailure("replayed", f"nonce {envelope['nonce']} was already used")

    @staticmethod
    def _check_shape(envelope: dict[str, Any]) -> None:
        kinds = {
            "audience": str, "key": str, "method": str, "params": dict, "nonce": str,
            "ts_ms": int, "sig": str,
        }
        missing = [
            field
            for field, kind in kinds.items()
            if not isinstance(envelope.get(field), kind) or isinstance(envelope[field], bool)
        ]
        if missing:
            raise AuthFailure(
                "unsigned", f"request is not signed: missing or malformed field(s) {missing}"
            )
        if not 0 < len(envelope["nonce"]) <= _MAX_NONCE_CHARS:
            raise AuthFailure("unsigned", f"nonce must have 1 to {_MAX_NONCE_CHARS} characters")

    @staticmethod
    def _check_key_text(text: str) -> None:
        try:
            parse_public_key(text)
        except BadKey as exc:
            raise AuthFailure("unsigned", f"request key is malformed: {exc}") from exc
