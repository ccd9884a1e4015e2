"""A protocol v2 sender for tests that need a peer holding the keys to say what the engine's
sender never would: a wrong whole-stream checksum, a misnumbered control message.

The framing comes from ``relay`` (the documented format, read independently of the engine);
the cryptography is ``ployz.transfer.session``'s, since the point of these tests is what the
receiver does with a well-authenticated but wrong message, not the key schedule itself.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz._xfer import frame_checksum
from ployz.transfer import session
from ployz.transfer.tickets import Target, Ticket, sign
from tests.host.transfer.relay import (
    AUTHENTICATED,
    END,
    FLAG_CONTROL,
    FLAG_END,
    UNSEALED,
    Frame,
    FrameReader,
)


class Peer:
    """One connection to a receiver, as a sender authenticated by the ticket-signing key."""

    def __init__(self, address: tuple[str, int], key: Ed25519PrivateKey, *,
                 transfer_id: str = "t-1", stream: dict[str, Any], frame_size: int,
                 encrypt: bool = False) -> None:
        self.key = key
        self.transfer_id = transfer_id
        self.stream = stream
        self.frame_size = frame_size
        self.encrypt = encrypt
        self.sock = socket.create_connection(address, timeout=10)
        self.reader = FrameReader(self.sock)
        self.sent_controls = 0
        self._out: session.Sealer | None = None
        self._in: session.Sealer | None = None

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def handshake(self, change: Callable[[Frame], Frame] | None = None,
                  **hello_fields: Any) -> dict[str, Any]:
        """INFO in, HELLO out (with ``hello_fields`` added or replaced, and its frame altered by
        ``change``), then the receiver's answer: a sealed ACCEPT, or a REJECT."""
        info = self.reader.frame()
        ephemeral = session.Ephemeral()
        info_body = self._plain(info)
        shared = ephemeral.exchange(info_body["kx"])
        target = Target.from_dict(info_body["target"])
        ticket = sign(Ticket(self.transfer_id, target, time.time() + 600, None, None), self.key)
        hello: dict[str, Any] = {
            "type": "hello", "protocol": 2, "ticket": ticket, "transfer_id": self.transfer_id,
            "frame_size": self.frame_size, "codecs": ["none"], "stream": self.stream,
            "kx": ephemeral.public_text, "encrypt": self.encrypt, "auth": "signature",
            **hello_fields}
        hello["proof"] = session.sign_hello(self.key,
                                            session.hello_transcript(info.payload, hello))
        payload = session.canonical(hello)  # the encoding both sides hash
        frame = Frame(FLAG_CONTROL, 0, len(payload), len(payload), 0,
                      frame_checksum(payload, 0), UNSEALED, payload)
        self.send_frame(change(frame) if change else frame)
        keys = session.derive_keys(shared, None,
                                   session.session_transcript(info.payload, payload),
                                   self.encrypt)
        self._out = session.Sealer(keys.sender, self.encrypt)
        self._in = session.Sealer(keys.receiver, self.encrypt)
        return self.recv()

    def recv(self) -> dict[str, Any]:
        """The receiver's next control message, opened if sealed."""
        frame = self.reader.frame()
        if frame.tag == UNSEALED:
            return self._plain(frame)
        assert self._in is not None, "a sealed message before the handshake"
        plain = self._in.open(frame.header()[:AUTHENTICATED], frame.payload, frame.tag,
                              session.KIND_CONTROL, frame.offset)
        return self._plain(frame.replace(payload=plain))

    def send_data(self, offset: int, payload: bytes) -> None:
        self._seal(0, offset, payload, session.KIND_DATA)

    def send_end(self, total: int, chain: int) -> None:
        self._seal(FLAG_END, total, END.pack(total, chain), session.KIND_END)

    def send_control(self, message: dict[str, Any], sequence: int | None = None) -> None:
        """A sealed control message numbered ``sequence`` (by default the next number)."""
        number = self.sent_controls if sequence is None else sequence
        self.sent_controls += 1
        self._seal(FLAG_CONTROL, number, session.canonical(message), session.KIND_CONTROL)

    def send_frame(self, frame: Frame) -> None:
        self.sock.sendall(frame.pack())

    def _seal(self, flags: int, offset: int, payload: bytes, kind: int) -> None:
        assert self._out is not None, "sealing before the handshake"
        checksum = 0 if self.encrypt else frame_checksum(payload, offset)
        frame = Frame(flags, 0, len(payload), len(payload), offset, checksum, UNSEALED, b"")
        wire, tag = self._out.seal(frame.header()[:AUTHENTICATED], payload, kind, offset)
        self.send_frame(frame.replace(tag=tag, payload=wire))

    @staticmethod
    def _plain(frame: Frame) -> dict[str, Any]:
        message = frame.message()
        assert message is not None, f"not a control message: {frame}"
        return message
