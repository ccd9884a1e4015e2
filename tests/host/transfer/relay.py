"""A real TCP relay for the transfer tests that reads the protocol v2 framing in both directions
and misbehaves on purpose, frame by frame: it rewrites, drops or delays frames, cuts a
connection (clean close or TCP reset) before or after a chosen frame, and counts and records
what passed.

It is the on-path attacker and the broken network of the tests. It parses the wire format from
its documentation (docs/protocol.md) rather than importing the engine's own constants, so that a
test also catches the engine drifting from the documented format.

Each accepted connection takes the next ``Plan`` of the relay's plan list (then ``repeat``, then
a faithful relay); a plan holds one set of ``Rules`` per direction: ``up`` is the client (the
sender) to the server (the receiver), ``down`` the way back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zstandard

from ployz._xfer import frame_checksum

MAGIC = 0x325A4C50  # b"PLZ2" as a little-endian u32
# magic, flags, reserved, wire_len, raw_len, offset, checksum, tag
HEADER = struct.Struct("<IHHIIQQ16s")
AUTHENTICATED = 32  # header bytes covered by the tag: all but the tag itself
UNSEALED = bytes(HEADER.size - AUTHENTICATED)  # the tag of the handshake's plaintext messages
FLAG_ZSTD = 0x1
FLAG_END = 0x2
FLAG_CONTROL = 0x4
END = struct.Struct("<QQ")  # END payload: total bytes, whole-stream checksum
# A frame longer than this is not one the engine sends (8 MiB frames at most): the relay stops
# parsing and copies bytes, rather than buffering whatever a broken peer announces.
MAX_PARSED = 64 * 1024 * 1024
UP, DOWN = "up", "down"


def chain_checksum(sums: Iterable[int]) -> int:
    """The whole-stream checksum of an END frame: xxh3-64 over the data frames' checksums as u64
    little-endian. Unseeded xxh3-64 is xxh3-64 with seed 0, which ``frame_checksum`` computes."""
    return frame_checksum(b"".join(s.to_bytes(8, "little") for s in sums), 0)


@dataclass
class Frame:
    """One frame as it crossed the relay, and where: ``index`` counts the frames of its
    direction on its connection, ``data_index`` only the data frames (None for the others),
    ``start`` is the byte offset of its header in that direction."""

    flags: int
    reserved: int
    wire_len: int
    raw_len: int
    offset: int
    checksum: int
    tag: bytes
    payload: bytes
    magic: int = MAGIC
    direction: str = UP
    connection: int = 0
    index: int = 0
    data_index: int | None = None
    start: int = 0

    @classmethod
    def unpack(cls, header: bytes, payload: bytes = b"") -> Frame:
        magic, flags, reserved, wire_len, raw_len, offset, checksum, tag = HEADER.unpack(header)
        return cls(flags, reserved, wire_len, raw_len, offset, checksum, tag, payload, magic)

    def header(self) -> bytes:
        return HEADER.pack(self.magic, self.flags, self.reserved, self.wire_len, self.raw_len,
                           self.offset, self.checksum, self.tag)

    def pack(self) -> bytes:
        return self.header() + self.payload

    def replace(self, **changes: Any) -> Frame:
        return dataclasses.replace(self, **changes)

    @property
    def size(self) -> int:
        return HEADER.size + len(self.payload)

    @property
    def is_control(self) -> bool:
        return bool(self.flags & FLAG_CONTROL)

    @property
    def is_end(self) -> bool:
        return bool(self.flags & FLAG_END) and not self.is_control

    @property
    def is_data(self) -> bool:
        return not self.flags & (FLAG_CONTROL | FLAG_END)

    def message(self) -> dict[str, Any] | None:
        """A control frame's JSON object, or None (not control, or sealed by encryption)."""
        if not self.is_control:
            return None
        try:
            message = json.loads(self.payload)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def decoded(self) -> bytes:
        """The payload as the receiver decodes it (unencrypted sessions only)."""
        if self.flags & FLAG_ZSTD:
            return zstandard.ZstdDecompressor().decompress(self.payload,
                                                           max_output_size=self.raw_len)
        return self.payload


Match = Callable[[Frame], bool]
Rewrite = Callable[[Frame], bytes | None]


def frame_no(index: int) -> Match:
    """The ``index``-th frame of a direction (control frames included)."""
    return lambda frame: frame.index == index


def data_frame(index: int) -> Match:
    """The ``index``-th data frame of a direction."""
    return lambda frame: frame.data_index == index


def end_frame(frame: Frame) -> bool:
    return frame.is_end


def message_type(kind: str) -> Match:
    """A plaintext or authenticated (not encrypted) control message of this type."""
    return lambda frame: (frame.message() or {}).get("type") == kind


@dataclass
class Rules:
    """What the relay does to one direction of one connection.

    ``rewrite`` gets every frame and returns the bytes to forward in its place (any bytes: a
    changed frame, several, a part of one) or None to drop it; ``delay`` says how many seconds
    to hold a frame; ``cut_before`` and ``cut_after`` pick the frame before or after which the
    connection is cut, both ways at once: with a TCP reset (``reset``, SO_LINGER 0) or a clean
    close."""

    rewrite: Rewrite | None = None
    delay: Callable[[Frame], float] | None = None
    cut_before: Match | None = None
    cut_after: Match | None = None
    reset: bool = False


@dataclass
class Plan:
    """The rules of one connection, per direction."""

    up: Rules = field(default_factory=Rules)  # sender -> receiver
    down: Rules = field(default_factory=Rules)  # receiver -> sender

    def rules(self, direction: str) -> Rules:
        return self.up if direction == UP else self.down


def cut_at_byte(at: int, reset: bool = False) -> Plan:
    """Cuts the connection after ``at`` sender-to-receiver bytes, mid-frame if it falls there
    (where a parser is most likely to mishandle a short read)."""
    def within(frame: Frame) -> bool:
        return frame.start <= at < frame.start + frame.size

    def rewrite(frame: Frame) -> bytes:
        return frame.pack()[:at - frame.start] if within(frame) else frame.pack()

    return Plan(up=Rules(rewrite=rewrite, cut_after=within, reset=reset))


def flip_at_byte(at: int, mask: int = 0x40) -> Plan:
    """Flips bits of the sender-to-receiver byte at ``at`` (counted from the connection's first
    byte), as a damaged link would."""
    def rewrite(frame: Frame) -> bytes:
        data = frame.pack()
        if frame.start <= at < frame.start + len(data):
            i = at - frame.start
            data = data[:i] + bytes([data[i] ^ mask]) + data[i + 1:]
        return data

    return Plan(up=Rules(rewrite=rewrite))


def flip_header_byte(match: Match, position: int, mask: int = 0x40) -> Plan:
    """Flips bits of byte ``position`` of the header of the sender's frame ``match`` picks."""
    def rewrite(frame: Frame) -> bytes:
        data = frame.pack()
        if match(frame):
            data = data[:position] + bytes([data[position] ^ mask]) + data[position + 1:]
        return data

    return Plan(up=Rules(rewrite=rewrite))


class Forger:
    """The on-path attacker that protocol v1 could not stop: it overwrites the first bytes of
    the data frames ``target`` picks (by default the first data frame of every connection),
    recomputes their checksums as the sender would have, and fixes the END frame's whole-stream
    checksum to match, passing everything else through. Only the authentication tag, which it
    cannot compute without the session key, can give it away.

    One forger follows a transfer across connections: the END of a resumed connection covers the
    checksums of frames forwarded on earlier ones."""

    def __init__(self, forged: bytes = b"FORGED BY THE RELAY",
                 target: Match | None = None) -> None:
        self.forged = forged
        self.target = target or data_frame(0)
        self.sums: dict[int, int] = {}  # data frame offset -> checksum as forwarded
        self.frames_forged = 0
        self.ends_fixed = 0

    def rules(self) -> Rules:
        return Rules(rewrite=self.rewrite)

    def rewrite(self, frame: Frame) -> bytes:
        if frame.direction == UP and frame.is_data:
            if self.target(frame):
                frame = self.forge(frame)
            self.sums[frame.offset] = frame.checksum
        elif frame.direction == UP and frame.is_end and self.frames_forged:
            frame = self.fix_end(frame)
        return frame.pack()

    def forge(self, frame: Frame) -> Frame:
        self.frames_forged += 1
        if not frame.checksum:  # an encrypted session: ciphertext, and no checksum to fix
            return frame.replace(payload=self._overwrite(frame.payload))
        raw = self._overwrite(frame.decoded())
        payload = (zstandard.ZstdCompressor().compress(raw) if frame.flags & FLAG_ZSTD
                   else raw)
        return frame.replace(payload=payload, wire_len=len(payload),
                             checksum=frame_checksum(raw, frame.offset))

    def fix_end(self, frame: Frame) -> Frame:
        if len(frame.payload) != END.size or not frame.checksum:
            return frame  # an encrypted END: nothing to read, nothing to fix
        total, _ = END.unpack(frame.payload)
        if total != frame.offset:
            return frame
        offsets = sorted(self.sums)
        step = offsets[1] - offsets[0] if len(offsets) > 1 else total
        if not offsets or offsets != list(range(0, total, step or 1)):
            return frame  # frames this relay never saw: the chain can not be recomputed
        payload = END.pack(total, chain_checksum(self.sums[o] for o in offsets))
        self.ends_fixed += 1
        return frame.replace(payload=payload, checksum=(
            frame_checksum(payload, frame.offset) if frame.checksum else 0))

    def _overwrite(self, data: bytes) -> bytes:
        n = min(len(self.forged), len(data))
        return self.forged[:n] + data[n:]


@dataclass
class Connection:
    """One relayed connection: what crossed it, and how it ended."""

    number: int
    plan: Plan
    frames: dict[str, list[Frame]] = field(default_factory=lambda: {UP: [], DOWN: []})
    dropped: dict[str, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})
    carried: dict[str, bytearray] = field(default_factory=lambda: {UP: bytearray(),
                                                                   DOWN: bytearray()})
    cut: str | None = None  # "reset" or "close" when the relay cut it
    closed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sockets: tuple[socket.socket, ...] = ()

    def passed(self, direction: str = UP) -> int:
        """Frames forwarded in ``direction`` (rewritten ones included, dropped ones not)."""
        return len(self.frames[direction]) - self.dropped[direction]


class Relay:
    """Listens on a loopback port and relays every connection to ``upstream`` under its plan.

    ``keep_bytes`` records every byte forwarded (``Connection.carried``), for tests that look
    for what an eavesdropper would see; the frames' headers are always recorded."""

    def __init__(self, upstream: tuple[str, int], plan: Sequence[Plan] = (),
                 repeat: Plan | None = None, keep_bytes: bool = False) -> None:
        self.upstream = upstream
        self.plan = list(plan)
        self.repeat = repeat
        self.keep_bytes = keep_bytes
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()
        self.connections: list[Connection] = []
        self.faults_done = 0  # frames rewritten or dropped, and connections cut
        self._count = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._relays: list[threading.Thread] = []

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        _shutdown(self.listener)  # wakes the accept loop; close alone would not
        self.listener.close()
        self._thread.join(5)
        for conn in self.connections:
            _shutdown(*conn.sockets)
        for relay in self._relays:
            relay.join(5)

    def connection(self, number: int, timeout: float = 30) -> Connection:
        """The ``number``-th connection (from 0), waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while len(self.connections) <= number:
            if time.monotonic() > deadline:
                raise AssertionError(f"connection {number} never reached the relay")
            time.sleep(0.01)
        return self.connections[number]

    def carried(self, direction: str = UP) -> bytes:
        """Everything forwarded in ``direction`` over all connections (needs ``keep_bytes``)."""
        return b"".join(bytes(conn.carried[direction]) for conn in self.connections)

    def frames(self, direction: str = UP) -> list[Frame]:
        return [frame for conn in self.connections for frame in conn.frames[direction]]

    def _fault(self) -> None:
        with self._count:
            self.faults_done += 1

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            plan = self.plan.pop(0) if self.plan else self.repeat or Plan()
            conn = Connection(len(self.connections), plan)
            self.connections.append(conn)
            relay = threading.Thread(target=self._relay, args=(conn, client), daemon=True)
            relay.start()
            self._relays.append(relay)

    def _relay(self, conn: Connection, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            conn.closed.set()
            return
        conn.sockets = (client, server)
        back = threading.Thread(target=self._pump, args=(conn, DOWN, server, client),
                                daemon=True)
        back.start()
        self._pump(conn, UP, client, server)
        back.join()
        client.close()
        server.close()
        conn.closed.set()

    def _pump(self, conn: Connection, direction: str, source: socket.socket,
              sink: socket.socket) -> None:
        """Relays one direction frame by frame. The end of the source's stream is passed on as a
        half close; a failure on either socket ends the connection both ways."""
        rules = conn.plan.rules(direction)
        reader = FrameReader(source)
        index = data_index = start = 0
        try:
            while True:
                header = reader.read(HEADER.size)
                frame = Frame.unpack(header) if len(header) == HEADER.size else None
                if frame is None or frame.magic != MAGIC or frame.wire_len > MAX_PARSED:
                    # not (or no longer) a stream of frames: relay the bytes as they are
                    self._send(conn, direction, sink, header)
                    while chunk := reader.read_some():
                        self._send(conn, direction, sink, chunk)
                    break
                payload = reader.read(frame.wire_len)
                if len(payload) < frame.wire_len:  # the peer stopped mid-frame
                    self._send(conn, direction, sink, header + payload)
                    break
                frame = frame.replace(payload=payload, direction=direction,
                                      connection=conn.number, index=index, start=start,
                                      data_index=data_index if frame.is_data else None)
                index += 1
                start += frame.size
                data_index += frame.is_data
                if not self._forward(conn, rules, frame, sink):
                    return
            if conn.cut is None:
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            if conn.cut is None:
                _shutdown(source, sink)

    def _forward(self, conn: Connection, rules: Rules, frame: Frame,
                 sink: socket.socket) -> bool:
        """Applies the rules to one frame; False once the connection is cut. A frame counts
        once in ``faults_done`` however many rules touched it (a cut mid-frame is a rewrite to
        a part of the frame, then a cut)."""
        if conn.cut is not None:
            return False
        if rules.cut_before and rules.cut_before(frame):
            self._cut(conn, rules.reset)
            self._fault()
            return False
        if rules.delay:
            time.sleep(rules.delay(frame))
        original = frame.pack()
        out = rules.rewrite(frame) if rules.rewrite else original
        # data payloads are large: kept only when asked for (control and END frames are small)
        keep = self.keep_bytes or not frame.is_data
        conn.frames[frame.direction].append(frame if keep else frame.replace(payload=b""))
        faulted = out != original
        if out is None:
            conn.dropped[frame.direction] += 1
        else:
            self._send(conn, frame.direction, sink, out)
        if rules.cut_after and rules.cut_after(frame):
            self._cut(conn, rules.reset)
            faulted = True
        if faulted:
            self._fault()
        return conn.cut is None

    def _send(self, conn: Connection, direction: str, sink: socket.socket,
              data: bytes) -> None:
        sink.sendall(data)
        if self.keep_bytes:
            conn.carried[direction] += data

    def _cut(self, conn: Connection, reset: bool) -> None:
        """Cuts both ways at once. A reset closes the sockets with SO_LINGER 0, which sends RST
        instead of FIN; SHUT_RD first wakes the other direction's thread from its recv (a
        close alone would not, and the kernel would hold the socket open until it returns)."""
        with conn.lock:
            if conn.cut is not None:
                return
            conn.cut = "reset" if reset else "close"
        for sock in conn.sockets:
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                    sock.close()
                else:
                    sock.shutdown(socket.SHUT_RDWR)


class FrameReader:
    """Exact-size reads from a socket (short only at the end of the stream), and whole frames
    for a test peer that speaks the protocol itself."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(max(size - len(self.buffer), 1 << 16))
            if not chunk:
                break
            self.buffer += chunk
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def frame(self) -> Frame:
        """The next whole frame; EOFError if the stream ends first."""
        header = self.read(HEADER.size)
        if len(header) < HEADER.size:
            raise EOFError(f"the stream ended after {len(header)} bytes of a frame header")
        frame = Frame.unpack(header)
        payload = self.read(frame.wire_len)
        if len(payload) < frame.wire_len:
            raise EOFError(f"the stream ended {frame.wire_len - len(payload)} bytes short of "
                           f"a frame's payload")
        return frame.replace(payload=payload)

    def read_some(self) -> bytes:
        if self.buffer:
            out = bytes(self.buffer)
            self.buffer.clear()
            return out
        return self.sock.recv(1 << 16)


def _shutdown(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
