"""Fuzzes the Python side of the protocol that parses a peer's bytes: control frame headers and
payloads (``ployz.transfer.protocol``), the sealed control channel, the receiver's handshake
(INFO out, HELLO in: ticket, proof, key exchange) and the sender's (INFO and ACCEPT in).

Whatever a peer sends, each of them must end in a typed ``TransferError`` (or succeed); any other
exception, a hang, or a success the peer had no right to is a finding. Successes are checked
too: a handshake that a HELLO with a forged proof or ticket got through, or after which the two
sides hold different keys, fails the harness.

Byte 0 of an input picks the mode; the rest is either sent as it is (raw modes) or drives a
generator of messages that are right but for the fields the fuzzer chooses to change, so that it
gets past the checksum and the signatures to the checks behind them:

0. ``protocol`` decoding of one header and payload, and ``tickets.verify_any``;
1. ``Channel.recv_reply`` (sealed control messages) over a socketpair;
2. ``Receiver._handshake`` fed raw bytes; 3. fed a generated HELLO;
4. ``Sender._handshake`` fed raw bytes; 5. fed a generated INFO and a sealed ACCEPT.

The handshakes run over loopback TCP, as in production (the data phase sets TCP options). They
call the receiver's and sender's per-connection handshake methods directly: ``serve()`` runs
them in threads that log and drop failures by design, which would hide the very exceptions this
harness looks for.

Run: ``python tests/fuzz/fuzz_handshake.py [libFuzzer flags] [corpus dirs]``, or through
``tests/fuzz/run.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import atheris

with atheris.instrument_imports():
    from known import known
    from wire import load_native

    load_native()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ployz.transfer import protocol as p
    from ployz.transfer import session, tickets
    from ployz.transfer.errors import TransferError
    from ployz.transfer.files import FileSink, FileSource
    from ployz.transfer.receiver import Receiver, ReceiverTimeouts
    from ployz.transfer.sender import Sender, SenderTimeouts
    from ployz.transfer.tickets import Target, Ticket

MODES = 6
TIMEOUT = 2.0  # each side's handshake timeout: a peer that sent everything and EOF needs none
U64 = 2**64 - 1
WORDS = ("hello", "info", "accept", "reject", "ack", "abort", "file", "zfs", "zstd", "none",
         "signature", "secret", "type", "kind", "name", "offset", "token", "complete")
# X25519 public values that force a known shared secret (RFC 7748 section 7 and its
# clamping aliases): a key exchange must refuse all of them
LOW_ORDER = [bytes(32), (1).to_bytes(32, "little"),
             bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
             bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
             (2**255 - 19 - 1).to_bytes(32, "little"), (2**255 - 19).to_bytes(32, "little"),
             (2**255 - 19 + 1).to_bytes(32, "little")]


class Finding(AssertionError):
    """A handshake did something the protocol does not allow."""


class World:
    """What every input shares: keys, a secret, a sink and its receivers, a loopback listener."""

    def __init__(self) -> None:
        logging.disable(logging.CRITICAL)
        self.key = Ed25519PrivateKey.generate()
        self.stranger = Ed25519PrivateKey.generate()  # a key the receivers do not trust
        self.secret = bytes(range(100, 132))
        self.directory = tempfile.TemporaryDirectory(prefix="ployz-fuzz-")
        self.sink = FileSink(f"{self.directory.name}/target")
        self.listener = socket.create_server(("127.0.0.1", 0))
        timeouts = ReceiverTimeouts(handshake=TIMEOUT)
        self.receivers = {
            "signature": Receiver(self.listener, self.sink, self.key.public_key(),
                                  timeouts=timeouts),
            "secret": Receiver(self.listener, self.sink, self.key.public_key(),
                               timeouts=timeouts, secret=self.secret),
        }
        source_path = f"{self.directory.name}/source"
        with open(source_path, "wb") as out:
            out.write(b"ployz" * 100)
        self.source = FileSource(source_path)

    def connection(self) -> tuple[socket.socket, socket.socket]:
        """A fresh loopback TCP connection: (the harness's end, the end under test)."""
        ours = socket.create_connection(self.listener.getsockname())
        theirs, _ = self.listener.accept()
        return ours, theirs

    def sender(self, auth: str, encrypt: bool) -> Sender:
        timeouts = SenderTimeouts(handshake=TIMEOUT)
        if auth == "secret":
            ticket = tickets.sign(Ticket("t-1", Target("file", "/x"), time.time() + 600),
                                  self.key)
            return Sender(self.source, ("127.0.0.1", 1), ticket=ticket, secret=self.secret,
                          encrypt=encrypt, transfer_id="t-1", timeouts=timeouts)
        return Sender(self.source, ("127.0.0.1", 1), key=self.key, encrypt=encrypt,
                      transfer_id="t-1", timeouts=timeouts, receiver_key=None)


WORLD: World | None = None


def world() -> World:
    global WORLD
    if WORLD is None:
        WORLD = World()
    return WORLD


# ---- generating values ----------------------------------------------------------------------


@atheris.instrument_func
def json_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """Any JSON value, weighted towards the edges a type check must refuse."""
    choice = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return fdp.ConsumeBool()
    if choice == 2:
        return fdp.ConsumeIntInRange(-3, 1 << 24)
    if choice == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 40))
    if choice == 4:
        return (math.nan, math.inf, -math.inf, 0.5, -0.0, 1e308, fdp.ConsumeFloat())[
            fdp.ConsumeIntInRange(0, 6)]
    if choice == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if choice == 6:
        return WORDS[fdp.ConsumeIntInRange(0, len(WORDS) - 1)]
    if choice == 7:
        return [json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {json_value_key(fdp): json_value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 3))}


def json_value_key(fdp: atheris.FuzzedDataProvider) -> str:
    if fdp.ConsumeBool():
        return WORDS[fdp.ConsumeIntInRange(0, len(WORDS) - 1)]
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 8))


@atheris.instrument_func
def perturb(fdp: atheris.FuzzedDataProvider, message: dict[str, Any],
            keys: tuple[str, ...]) -> set[str]:
    """Changes or drops a few fields of ``message``; returns the names it touched."""
    touched: set[str] = set()
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        name = (keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
                if keys and fdp.ConsumeIntInRange(0, 5) else json_value_key(fdp))
        touched.add(name)
        if fdp.ConsumeIntInRange(0, 3) == 0:
            message.pop(name, None)
        else:
            message[name] = json_value(fdp)
    return touched


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@atheris.instrument_func
def make_ticket(fdp: atheris.FuzzedDataProvider, w: World,
                target: Target) -> tuple[str, bool]:
    """A ticket for ``target``, or one that is wrong in a way the fuzzer picks; returns it and
    whether the trusted key signed it (only such a ticket may ever be accepted)."""
    body: dict[str, Any] = {"v": 1, "transfer_id": "t-1", "target": target.as_dict(),
                            "expires_at": time.time() + 600, "toguid": None, "fromguid": None}
    how = fdp.ConsumeIntInRange(0, 7)
    if how == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80)), False
    if how == 6:  # signed for the same payload, but by a key the receiver does not trust
        payload = tickets.Ticket("t-1", target, time.time() + 600).payload()
        signature = w.stranger.sign(tickets.DOMAIN + payload)
        return f"{_b64url(payload)}.{_b64url(signature)}", False
    if how >= 3:
        perturb(fdp, body, tuple(body))
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    signature = w.key.sign(tickets.DOMAIN + payload)
    if how == 7:
        signature = bytes(64 - len(signature[:1])) + signature[:1]
    return f"{_b64url(payload)}.{_b64url(signature)}", how != 7


def frame_bytes(fdp: atheris.FuzzedDataProvider, message: dict[str, Any]) -> bytes:
    """An unsealed control frame for ``message``, sometimes with its header or length wrong."""
    return damaged_frame(fdp, message)[0]


@atheris.instrument_func
def damaged_frame(fdp: atheris.FuzzedDataProvider,
                  message: dict[str, Any]) -> tuple[bytes, bool]:
    """As ``frame_bytes``, also saying whether the frame is still whole: a peer sent a broken
    one must not wait for an answer that it may never get."""
    try:
        frame = bytearray(p.encode_control(message))
    except (TransferError, ValueError):  # too large, or not JSON at all
        frame = bytearray(p.encode_control({"type": "hello"}))
    damage = fdp.ConsumeIntInRange(0, 15)
    if damage == 10:  # one bit anywhere
        at = fdp.ConsumeIntInRange(0, len(frame) - 1)
        frame[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
    elif damage == 11:  # one header field replaced
        at = fdp.ConsumeIntInRange(0, 5)
        offset, size = ((0, 4), (4, 2), (6, 2), (8, 4), (16, 8), (32, 16))[at]
        frame[offset:offset + size] = fdp.ConsumeBytes(size).ljust(size, b"\xff")
    elif damage == 12:
        del frame[fdp.ConsumeIntInRange(0, len(frame) - 1):]
    elif damage == 13:
        frame += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
    return bytes(frame), not 10 <= damage <= 13


# ---- the modes ------------------------------------------------------------------------------


def _typed(exc: BaseException, what: str) -> None:
    """Lets a typed error pass; anything else is a finding, reported with where it came from
    (atheris prints only the last exception of a chain)."""
    if not isinstance(exc, TransferError) and known(exc) is None:
        where = "".join(traceback.format_exception(exc)[-4:])
        raise Finding(f"{what} raised {type(exc).__name__}, not a TransferError:\n{where}") from exc


@atheris.instrument_func
def fuzz_decoding(data: bytes) -> None:
    """One header and payload through the module's decoders, and the bytes as a ticket."""
    header_bytes, payload = data[:p.HEADER_SIZE], data[p.HEADER_SIZE:]
    if len(header_bytes) == p.HEADER_SIZE:
        try:
            header = p.Header.unpack(header_bytes)
            p.check_control_header(header, (p.HELLO,), header.offset)
            message = p.decode_control(header, payload[:header.wire_len])
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise Finding(f"decode_control returned {message!r}")
        except Finding:
            raise
        except Exception as exc:
            _typed(exc, "decoding a control frame")
    try:
        message = p.parse_control(data)
        for key, kind in (("offset", int), ("token", str), ("resume", dict)):
            with contextlib.suppress(TransferError):
                p.require(message, key, kind)
    except Exception as exc:
        _typed(exc, "parse_control")
    text = data.decode("utf-8", "replace")
    try:
        tickets.verify_any(text, (world().key.public_key(),))
    except Exception as exc:
        _typed(exc, "verify_any")
    for check in (lambda: session.Ephemeral().exchange(text),
                  lambda: session.verify_secret_proof(world().secret, text, bytes(32)),
                  lambda: session.verify_hello_signature((world().key.public_key(),), text,
                                                         bytes(32))):
        try:
            check()
        except Exception as exc:
            _typed(exc, "a session check")


@atheris.instrument_func
def fuzz_channel(fdp: atheris.FuzzedDataProvider) -> None:
    """Sealed control messages into a receiver's channel: only authentic ones, in sequence,
    may come out, and only of the types asked for."""
    encrypt = fdp.ConsumeBool()
    keys = session.SessionKeys(bytes(range(32)), bytes(range(32, 64)), encrypt)
    out = bytearray()
    authentic: list[bool] = []
    sequence = 0
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        choice = fdp.ConsumeIntInRange(0, 4)
        if choice == 0:
            out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 96))
            continue
        message: dict[str, Any] = {"type": (p.ACK, p.ACCEPT, p.REJECT, "x")[
            fdp.ConsumeIntInRange(0, 3)]}
        perturb(fdp, message, ("type", "code", "message", "resume"))
        if choice == 1:  # unsealed, as a REJECT sent before keys existed
            out += frame_bytes(fdp, message)
            continue
        number = sequence if fdp.ConsumeIntInRange(0, 5) else fdp.ConsumeIntInRange(0, 5)
        key = keys.sender if choice != 4 else keys.receiver  # 4: reflected back
        try:
            frame = bytearray(p.encode_control(message, session.Sealer(key, encrypt), number))
        except TransferError:
            continue
        damage = fdp.ConsumeIntInRange(0, 7)
        if damage == 7:
            at = fdp.ConsumeIntInRange(0, len(frame) - 1)
            frame[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        good = damage != 7 and choice != 4 and number == sequence
        authentic.append(good)
        if good:
            sequence += 1
        out += frame
    ours, theirs = socket.socketpair()
    try:
        ours.sendall(bytes(out))
        ours.shutdown(socket.SHUT_WR)
        channel = p.Channel.for_receiver(theirs, keys)
        unsealed = (p.REJECT,) if fdp.ConsumeBool() else ()
        expect = (p.ACK,) if fdp.ConsumeBool() else (p.ACCEPT, p.REJECT)
        for _ in range(4):
            try:
                message = channel.recv_reply(TIMEOUT, expect, unsealed)
            except Exception as exc:
                _typed(exc, "Channel.recv_reply")
                return
            if message.get("type") not in expect + unsealed:
                raise Finding(f"channel returned a {message.get('type')!r} message")
            if not authentic and not unsealed:
                raise Finding("channel returned a message nobody sealed")
    finally:
        ours.close()
        theirs.close()


@atheris.instrument_func
def hello_client(fdp: atheris.FuzzedDataProvider, w: World, sock: socket.socket, auth: str,
                 facts: dict[str, Any]) -> None:
    """An honest sender's HELLO, with some of it changed: what it changed goes into ``facts``,
    with the session keys it derived, for the oracle."""
    try:
        info, info_payload = p.recv_raw_control(sock, TIMEOUT, (p.INFO,))
    except TransferError:
        return
    ephemeral = session.Ephemeral()
    encrypt = fdp.ConsumeBool()
    ticket, signed = make_ticket(fdp, w, w.sink.target if fdp.ConsumeIntInRange(0, 5)
                                 else Target("file", "/elsewhere"))
    hello: dict[str, Any] = {
        "type": p.HELLO, "protocol": p.PROTOCOL_VERSION, "ticket": ticket,
        "transfer_id": "t-1", "frame_size": p.DEFAULT_FRAME_SIZE, "codecs": ["zstd", "none"],
        "stream": {"kind": "file", "size": 500}, "kx": ephemeral.public_text,
        "encrypt": encrypt, "auth": auth if fdp.ConsumeIntInRange(0, 7) else "signature"}
    if fdp.ConsumeIntInRange(0, 7) == 0:
        hello["abort"] = json_value(fdp)
    touched = perturb(fdp, hello, tuple(hello))
    if fdp.ConsumeIntInRange(0, 7) == 0:
        hello["kx"] = base64.b64encode(LOW_ORDER[fdp.ConsumeIntInRange(0, len(LOW_ORDER) - 1)]
                                       ).decode()
        touched.add("kx")
    proof_of = session.hello_transcript(info_payload, hello)
    if auth == "secret":
        hello["proof"] = session.secret_proof(w.secret, proof_of)
    else:
        hello["proof"] = session.sign_hello(w.key, proof_of)
    proof_ok = "proof" not in touched and fdp.ConsumeIntInRange(0, 7) != 0
    if not proof_ok:
        hello["proof"] = json_value(fdp) if fdp.ConsumeBool() else hello["proof"][::-1]
    frame = frame_bytes(fdp, hello)
    with contextlib.suppress(OSError):
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
    # the receiver hashes the payload its header announces, whatever follows it
    length = struct.unpack_from("<I", frame, 8)[0] if len(frame) >= p.HEADER_SIZE else 0
    hello_payload = frame[p.HEADER_SIZE:p.HEADER_SIZE + length]
    facts.update(signed=signed and "ticket" not in touched, proof_ok=proof_ok, hello=hello,
                 info_payload=info_payload, encrypt=encrypt)
    with contextlib.suppress(TransferError):
        shared = ephemeral.exchange(info.get("kx"))
        transcript = session.session_transcript(info_payload, hello_payload)
        secret = w.secret if auth == "secret" else None
        facts["keys"] = session.derive_keys(shared, secret, transcript,
                                             hello.get("encrypt") is True)
    with contextlib.suppress(OSError):
        while sock.recv(1 << 16):
            pass


@atheris.instrument_func
def fuzz_receiver(fdp: atheris.FuzzedDataProvider, raw: bool) -> None:
    """A receiver's handshake with a client of raw bytes or of a generated HELLO."""
    w = world()
    auth = "secret" if fdp.ConsumeBool() else "signature"
    receiver = w.receivers[auth]
    ours, theirs = w.connection()
    facts: dict[str, Any] = {}
    if raw:
        data = fdp.ConsumeBytes(fdp.remaining_bytes())
        client = threading.Thread(target=_send_raw, args=(ours, data), daemon=True)
    else:
        client = threading.Thread(target=hello_client, args=(fdp, w, ours, auth, facts),
                                  daemon=True)
    client.start()
    try:
        try:
            ready = receiver._handshake(theirs)
        except Exception as exc:
            _typed(exc, "Receiver._handshake")
            return
        finally:
            with contextlib.suppress(OSError):
                theirs.shutdown(socket.SHUT_RDWR)
            client.join()
        check_accepted(w, receiver, ready, facts, raw)
    finally:
        ours.close()
        theirs.close()


def check_accepted(w: World, receiver: Receiver, ready: Any, facts: dict[str, Any],
                   raw: bool) -> None:
    """A HELLO the receiver took must have been entitled to it."""
    if raw:
        raise Finding("a receiver accepted a HELLO that no key holder made")
    if not facts.get("signed"):
        raise Finding("a receiver accepted a ticket the trusted key did not sign")
    if not facts.get("proof_ok"):
        raise Finding(f"a receiver accepted a HELLO whose proof was forged: "
                      f"{facts['hello'].get('proof')!r}")
    if ready.ticket.target != w.sink.target:  # an ABORT too: it is for another receiver
        raise Finding(f"a receiver of {w.sink.target} accepted a ticket for "
                      f"{ready.ticket.target} (abort: {ready.abort!r})")
    if not math.isfinite(ready.ticket.expires_at) or ready.ticket.expires_at <= time.time():
        raise Finding(f"a receiver accepted a ticket expiring at {ready.ticket.expires_at}")
    keys = facts.get("keys")
    if keys is None or ready.channel.receiving_key != keys.sender or (
            ready.channel.sending_key != keys.receiver):
        raise Finding("the receiver and the sender derived different session keys")
    if ready.channel.encrypt is not facts["hello"].get("encrypt"):
        raise Finding(f"session encrypts {ready.channel.encrypt}; the sender asked for "
                      f"{facts['hello'].get('encrypt')!r}")


def _send_raw(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(1 << 16):
            pass


@atheris.instrument_func
def receiver_peer(fdp: atheris.FuzzedDataProvider, w: World, sock: socket.socket, auth: str,
                  encrypt: bool) -> None:
    """A receiver's side for a sender under test: an INFO, then a sealed ACCEPT or REJECT,
    each right but for what the fuzzer changes."""
    ephemeral = session.Ephemeral()
    info: dict[str, Any] = {"type": p.INFO, "protocol": p.PROTOCOL_VERSION,
                            "target": {"kind": "file", "name": "/x"}, "kx": ephemeral.public_text}
    perturb(fdp, info, tuple(info))
    frame, whole = damaged_frame(fdp, info)
    info_payload = frame[p.HEADER_SIZE:]
    try:
        sock.sendall(frame)
        if not whole:
            _send_raw(sock, b"")
            return
        hello, hello_payload = p.recv_raw_control(sock, TIMEOUT, (p.HELLO,))
        shared = ephemeral.exchange(hello.get("kx"))
    except (TransferError, OSError):
        return
    transcript = session.session_transcript(info_payload, hello_payload)
    keys = session.derive_keys(shared, w.secret if auth == "secret" else None, transcript,
                               encrypt)
    reply: dict[str, Any] = {"type": p.ACCEPT, "codec": "zstd",
                             "resume": {"offset": 0, "token": None, "notices": [],
                                        "complete": False},
                             "proof": session.sign_accept(w.key, transcript)}
    if fdp.ConsumeIntInRange(0, 7) == 0:
        reply = {"type": p.REJECT, "code": json_value(fdp), "message": json_value(fdp)}
    perturb(fdp, reply, tuple(reply))
    if isinstance(reply.get("resume"), dict) and fdp.ConsumeBool():
        perturb(fdp, reply["resume"], tuple(reply["resume"]))
    channel = p.Channel.for_receiver(sock, keys)
    with contextlib.suppress(TransferError, OSError):
        if fdp.ConsumeIntInRange(0, 5):
            channel.send(reply)
        else:
            sock.sendall(frame_bytes(fdp, reply))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(1 << 16):
            pass


@atheris.instrument_func
def fuzz_sender(fdp: atheris.FuzzedDataProvider, raw: bool) -> None:
    """A sender's handshake against a receiver of raw bytes or of generated replies."""
    w = world()
    auth = "secret" if fdp.ConsumeBool() else "signature"
    encrypt = fdp.ConsumeBool()
    sender = w.sender(auth, encrypt)
    ours, theirs = w.connection()
    if raw:
        peer = threading.Thread(target=_send_raw, args=(ours, fdp.ConsumeBytes(
            fdp.remaining_bytes())), daemon=True)
    else:
        peer = threading.Thread(target=receiver_peer, args=(fdp, w, ours, auth, encrypt),
                                daemon=True)
    peer.start()
    try:
        try:
            sender._handshake(theirs)
        except Exception as exc:
            _typed(exc, "Sender._handshake")
        finally:
            with contextlib.suppress(OSError):
                theirs.shutdown(socket.SHUT_RDWR)
            peer.join()
    finally:
        ours.close()
        theirs.close()


THREAD_ERRORS: list[BaseException] = []


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A peer thread that dies of its own bug would leave the side under test waiting for its
    timeout, and hide that the input was never tried: the input fails instead."""
    if args.exc_value is not None:
        THREAD_ERRORS.append(args.exc_value)


threading.excepthook = _thread_failed


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        _one_input(data)
    finally:
        if THREAD_ERRORS:
            error = THREAD_ERRORS.pop()
            THREAD_ERRORS.clear()
            where = "".join(traceback.format_exception(error))
            raise Finding(f"a peer thread of the harness failed:\n{where}")


def _one_input(data: bytes) -> None:
    mode = data[0] % MODES
    fdp = atheris.FuzzedDataProvider(data[1:])
    if mode == 0:
        fuzz_decoding(data[1:])
    elif mode == 1:
        fuzz_channel(fdp)
    elif mode in (2, 3):
        fuzz_receiver(fdp, raw=mode == 2)
    else:
        fuzz_sender(fdp, raw=mode == 4)


def seeds() -> Iterator[bytes]:
    """Inputs of every mode, the raw ones made of real messages."""
    hello = p.encode_control({"type": p.HELLO, "protocol": p.PROTOCOL_VERSION, "ticket": "x.y",
                              "transfer_id": "t-1", "frame_size": p.DEFAULT_FRAME_SIZE,
                              "codecs": ["zstd", "none"], "stream": {"kind": "file"},
                              "kx": session.Ephemeral().public_text, "encrypt": False,
                              "auth": "signature", "proof": "AAAA"})
    info = p.encode_control({"type": p.INFO, "protocol": p.PROTOCOL_VERSION,
                             "target": {"kind": "file", "name": "/x"},
                             "kx": session.Ephemeral().public_text})
    reject = p.encode_control({"type": p.REJECT, "code": "ticket", "message": "no"})
    yield b"\0" + hello
    yield b"\0" + reject
    yield b"\0" + tickets.sign(Ticket("t-1", Target("file", "/x"), 1e12),
                               Ed25519PrivateKey.generate()).encode()
    for mode in range(1, MODES):
        for flip in (b"\0", b"\1"):
            yield bytes((mode,)) + flip + bytes(64)
            yield bytes((mode,)) + flip + bytes(range(256))
    yield b"\2\0" + hello
    yield b"\2\1" + hello + reject
    yield b"\4\0\0" + info
    yield b"\4\1\1" + info + reject
    yield b"\1\0" + struct.pack("<Q", U64) + reject


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
