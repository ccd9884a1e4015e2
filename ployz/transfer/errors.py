"""Typed errors of the transfer engine, each saying what failed and whether a retry can help.

``retryable`` errors (a dropped or stalled connection, a frame that failed its checksum) make the
sender reconnect and resume; the others end the transfer.
"""

from __future__ import annotations

from ployz._xfer import ERROR_KINDS


class TransferError(Exception):
    """Base class of every transfer failure."""

    retryable = False


class ConnectionLost(TransferError):
    """The connection broke or could not be made; the sender resumes after a backoff."""

    retryable = True


class IdleTimeout(ConnectionLost):
    """No progress on the socket within the idle (or handshake) timeout."""


class ChecksumMismatch(TransferError):
    """A frame (or the whole stream) did not match its checksum. Nothing of the bad frame reached
    the sink; the sender resends from the receiver's commit point."""

    retryable = True


class IntegrityError(ChecksumMismatch):
    """A frame or message failed its authentication tag: damaged or altered on the way; nothing
    of it was used."""


class StreamChecksumMismatch(TransferError):
    """Every frame passed its checks yet the whole stream does not match what the sender sent:
    a bug on one side, which resending cannot fix, so the transfer ends at once."""


class FramingError(ConnectionLost):
    """A frame header that cannot be right (damaged on the way): the stream cannot be followed
    past it, so the connection is dropped and the sender resumes from the commit point."""


class TransferAborted(TransferError):
    """The sender gave the transfer up (its source failed, or it ran out of attempts) and told
    the receiver so, which then stops waiting for it."""


class ProtocolError(TransferError):
    """The peer sent something the protocol does not allow (bad magic, oversized frame, wrong
    message at this point)."""


class TicketRefused(TransferError):
    """The ticket is missing, not signed by a trusted key, expired, or names another target."""


class AuthenticationFailed(TicketRefused):
    """A peer could not prove the key or secret the transfer requires."""


class Refused(TransferError):
    """The receiver refused the transfer; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"receiver refused the transfer ({code}): {message}")
        self.code = code
        self.message = message


class SourceError(TransferError):
    """Reading the source (file or ``zfs send``) failed."""


class SinkError(TransferError):
    """Writing the sink (file or ``zfs receive``) failed, or its commit did."""


class CodecError(TransferError):
    """zstd failed to compress a frame."""


class StaleResumeToken(TransferError):
    """A partial receive on the target belongs to another stream (toguid, fromguid or toname
    differ); the receiver aborted it and starts over."""


class RetriesExhausted(TransferError):
    """The sender gave up after its configured number of attempts; ``__cause__`` is the last
    failure."""


# The exception of each error kind the native data path reports (ployz._xfer.ERROR_KINDS).
_NATIVE_KINDS: dict[int, type[TransferError]] = {
    ERROR_KINDS[name]: kind for name, kind in {
        "connection": ConnectionLost, "timeout": IdleTimeout, "protocol": ProtocolError,
        "checksum": ChecksumMismatch, "source": SourceError, "sink": SinkError,
        "codec": CodecError, "resource": TransferError, "stopped": ConnectionLost,
        "integrity": IntegrityError, "framing": FramingError,
    }.items()
}


def native_error(kind: int, message: str) -> TransferError:
    """Turns a ``(kind, errno, message)`` result of the native data path into its exception."""
    return _NATIVE_KINDS.get(kind, TransferError)(message)
