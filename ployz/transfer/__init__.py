"""The transfer engine: authenticated, resumable, verified streams between machines.

A ``Sender`` reads a ``Source`` (a file, a ZFS snapshot) and a ``Receiver`` writes a ``Sink`` (a
file, a ZFS dataset); between them runs the protocol of ``ployz.transfer.protocol`` over TCP,
with the per-byte work done by the native data path in ``ployz._xfer``.
"""

from ployz.transfer.endpoints import ResumePoint, Sink, Source, SourceRun
from ployz.transfer.errors import (
    ChecksumMismatch,
    CodecError,
    ConnectionLost,
    IdleTimeout,
    ProtocolError,
    Refused,
    RetriesExhausted,
    SinkError,
    SourceError,
    StaleResumeToken,
    TicketRefused,
    TransferError,
)
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.progress import Progress, ProgressMeter
from ployz.transfer.receiver import Receiver, ReceiverTimeouts
from ployz.transfer.results import ReceiveResult, SendResult, TransferResult
from ployz.transfer.sender import RetryPolicy, Sender, SenderTimeouts
from ployz.transfer.tickets import Target, Ticket

__all__ = [
    "ChecksumMismatch", "CodecError", "ConnectionLost", "FileSink", "FileSource", "IdleTimeout",
    "Progress", "ProgressMeter", "ProtocolError", "ReceiveResult", "Receiver",
    "ReceiverTimeouts", "Refused", "ResumePoint", "RetriesExhausted", "RetryPolicy",
    "SendResult", "Sender", "SenderTimeouts", "Sink", "SinkError", "Source", "SourceError",
    "SourceRun", "StaleResumeToken", "Target", "Ticket", "TicketRefused", "TransferError",
    "TransferResult",
]
