"""Failure codes on the wire (REJECT and FAILURE messages) and the exceptions they stand for, so
that the sender raises the same typed error the receiver saw."""

from __future__ import annotations

from ployz.transfer.errors import (
    ChecksumMismatch,
    CodecError,
    ConnectionLost,
    FramingError,
    IdleTimeout,
    IntegrityError,
    ProtocolError,
    Refused,
    SinkError,
    StaleResumeToken,
    StreamChecksumMismatch,
    TicketRefused,
    TransferAborted,
    TransferError,
)

_CODES: dict[str, type[TransferError]] = {
    "checksum": ChecksumMismatch,
    "integrity": IntegrityError,
    "framing": FramingError,
    "stream_checksum": StreamChecksumMismatch,
    "aborted": TransferAborted,
    "timeout": IdleTimeout,
    "connection": ConnectionLost,
    "protocol": ProtocolError,
    "sink": SinkError,
    "codec": CodecError,
    "stale_token": StaleResumeToken,
    "ticket": TicketRefused,
}


def failure_code(exc: TransferError) -> str:
    if isinstance(exc, Refused):
        return exc.code
    for code, kind in _CODES.items():
        if type(exc) is kind:
            return code
    return "error"


def failure_from(code: object, message: object) -> TransferError:
    text = str(message)[:1000]
    kind = _CODES.get(code) if isinstance(code, str) else None
    return (kind or TransferError)(f"receiver reported: {text}")
