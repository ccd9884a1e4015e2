"""What the fuzz harnesses share: the native module they test, and an independent reference model
of the v2 data stream (docs/protocol.md) that says what the native receiver must do with any
bytes.

The model is written from the protocol, not from the C code: frames are opened with the
``cryptography`` package's AES-GCM, so a native tag check that accepted a forged frame, or a
frame decoded that should not have been, shows up as a difference between the two. zstd and the
xxh3 checksum are the same primitives the native side uses (libzstd through ctypes, the native
checksum function): the model checks the framing around them, not them.

The model's branches mirror the decoder's decisions, so atheris's coverage of this module is
also the fuzzer's view of how deep an input got into the native decoder, whose own C code it
cannot see.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import struct
import sys
from dataclasses import dataclass, field
from types import ModuleType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def load_native() -> ModuleType:
    """``ployz._xfer``, or the build named by ``PLOYZ_FUZZ_XFER`` (a sanitizer build of the same
    sources), installed under the real name before anything of ``ployz.transfer`` imports it."""
    path = os.environ.get("PLOYZ_FUZZ_XFER")
    if path:
        import ployz

        spec = importlib.util.spec_from_file_location("ployz._xfer", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["ployz._xfer"] = module
        spec.loader.exec_module(module)
        ployz._xfer = module  # type: ignore[attr-defined]
    import ployz._xfer

    return ployz._xfer


native = load_native()

MAGIC = 0x325A4C50
AAD = struct.Struct("<IHHIIQQ")  # magic, flags, reserved, wire_len, raw_len, offset, checksum
TAG_SIZE = 16
HEADER_SIZE = AAD.size + TAG_SIZE
KEY_SIZE = 32
FLAG_ZSTD, FLAG_END, FLAG_CONTROL = 0x1, 0x2, 0x4
END_PAYLOAD = 16
KIND_DATA, KIND_END, KIND_CONTROL = 1, 2, 3
# the session key every data-stream input is sealed with; public, as the fuzzer must not be
# able to forge tags, only to reuse the ones the seeds and the structured inputs carry
KEY = bytes(range(KEY_SIZE))

KINDS = native.ERROR_KINDS
OK = 0
CONNECTION, PROTOCOL, CHECKSUM = KINDS["connection"], KINDS["protocol"], KINDS["checksum"]
INTEGRITY, FRAMING = KINDS["integrity"], KINDS["framing"]

_zstd = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
_zstd.ZSTD_decompress.restype = ctypes.c_size_t
_zstd.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                  ctypes.c_size_t]
_zstd.ZSTD_compress.restype = ctypes.c_size_t
_zstd.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                ctypes.c_size_t, ctypes.c_int]
_zstd.ZSTD_compressBound.restype = ctypes.c_size_t
_zstd.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
_zstd.ZSTD_isError.restype = ctypes.c_uint
_zstd.ZSTD_isError.argtypes = [ctypes.c_size_t]


def zstd_bound(size: int) -> int:
    return int(_zstd.ZSTD_compressBound(size))


def zstd_compress(data: bytes, level: int = 1) -> bytes:
    out = ctypes.create_string_buffer(zstd_bound(len(data)))
    n = _zstd.ZSTD_compress(out, len(out), data, len(data), level)
    if _zstd.ZSTD_isError(n):
        raise ValueError("zstd could not compress")
    return out.raw[:n]


def zstd_decompress(data: bytes, capacity: int) -> bytes | None:
    """What the receiver's workers get: every frame of ``data`` into ``capacity`` bytes, or None
    where libzstd reports an error (as ``ZSTD_decompressDCtx`` does for the native side)."""
    out = ctypes.create_string_buffer(max(capacity, 1))
    n = _zstd.ZSTD_decompress(out, capacity, data, len(data))
    return None if _zstd.ZSTD_isError(n) else out.raw[:n]


def nonce(kind: int, value: int) -> bytes:
    return struct.pack("<IQ", kind, value)


def seal(key: bytes, encrypt: bool, aad: bytes, payload: bytes, kind: int,
         value: int) -> tuple[bytes, bytes]:
    """The wire payload and tag of a frame, as the protocol defines them."""
    aead = AESGCM(key)
    if encrypt:
        sealed = aead.encrypt(nonce(kind, value), payload, aad)
        return sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
    return payload, aead.encrypt(nonce(kind, value), b"", aad + payload)


def unseal(key: bytes, encrypt: bool, aad: bytes, payload: bytes, tag: bytes, kind: int,
           value: int) -> bytes | None:
    """The frame's wire bytes in the clear, or None when its tag fails."""
    aead = AESGCM(key)
    try:
        if encrypt:
            return aead.decrypt(nonce(kind, value), payload + tag, aad)
        aead.decrypt(nonce(kind, value), tag, aad + payload)
    except InvalidTag:
        return None
    return payload


def frame(key: bytes, encrypt: bool, flags: int, raw_len: int, offset: int, checksum: int,
          payload: bytes, *, magic: int = MAGIC, reserved: int = 0,
          wire_len: int | None = None, kind: int | None = None) -> bytes:
    """One sealed frame whose header says what the caller asks, honest or not: the tag is made
    over that header, so a wrong field is authentic and must be caught by the decoder's rules,
    not by the tag. ``kind`` overrides the nonce's kind (a frame sealed for another use)."""
    if kind is None:
        kind = KIND_END if flags & FLAG_END else KIND_DATA
    length = len(payload) if wire_len is None else wire_len
    aad = AAD.pack(magic, flags, reserved, length, raw_len, offset, checksum)
    wire, tag = seal(key, encrypt, aad, payload, kind, offset)
    return aad + tag + wire


@dataclass(frozen=True)
class Config:
    """One receiver's settings, as a StreamReceiver takes them."""

    frame_size: int
    allow_zstd: bool
    workers: int
    encrypt: bool
    key: bytes = KEY

    @property
    def wire_cap(self) -> int:
        return zstd_bound(self.frame_size) if self.allow_zstd else self.frame_size


@dataclass(frozen=True)
class Frame:
    """A data frame as the receiver's reader handed it on: ``bad`` if it fails decoding or its
    checksum, which the workers or the writer find after the reader has moved on."""

    plain: bytes
    offset: int
    checksum: int
    bad: bool


@dataclass
class Verdict:
    """What one connection's bytes must lead to. ``stop`` is the kind of error the reader ends
    on (None if it reached a good end frame); data frames before it are in ``frames``."""

    frames: list[Frame] = field(default_factory=list)
    stop: int | None = None
    reason: str = ""
    end: tuple[int, int] | None = None  # total bytes and whole-stream checksum of the end frame

    @property
    def first_bad(self) -> int:
        return next((i for i, f in enumerate(self.frames) if f.bad), len(self.frames))


def judge(config: Config, stream: bytes, start: int, short_seen: bool) -> Verdict:
    """Reads ``stream`` as the receiver's reader must, from stream offset ``start``."""
    verdict = Verdict()
    pos, expect = 0, start
    while True:
        if len(stream) - pos < HEADER_SIZE:
            verdict.stop, verdict.reason = CONNECTION, "eof in a header"
            return verdict
        header = stream[pos:pos + HEADER_SIZE]
        pos += HEADER_SIZE
        aad, tag = header[:AAD.size], header[AAD.size:]
        magic, flags, reserved, wire_len, raw_len, offset, checksum = AAD.unpack(aad)
        is_end = bool(flags & FLAG_END)
        zstd = bool(flags & FLAG_ZSTD)
        why = _framing(config, magic, flags, reserved, wire_len, raw_len, is_end, zstd)
        if why:
            verdict.stop, verdict.reason = FRAMING, why
            return verdict
        if len(stream) - pos < wire_len:
            verdict.stop, verdict.reason = CONNECTION, "eof in a payload"
            return verdict
        payload = stream[pos:pos + wire_len]
        pos += wire_len
        wire = unseal(config.key, config.encrypt, aad, payload, tag,
                      KIND_END if is_end else KIND_DATA, offset)
        if wire is None:
            verdict.stop, verdict.reason = INTEGRITY, "tag"
            return verdict
        if offset != expect:  # authentic but replayed, dropped or reordered: lost framing
            verdict.stop, verdict.reason = FRAMING, "offset"
            return verdict
        if not is_end and short_seen:
            verdict.stop, verdict.reason = PROTOCOL, "data after a short frame"
            return verdict
        if is_end:
            if not config.encrypt and native.frame_checksum(wire, offset) != checksum:
                verdict.stop, verdict.reason = CHECKSUM, "end frame checksum"
                return verdict
            verdict.end = struct.unpack("<QQ", wire)
            return verdict
        expect += raw_len
        short_seen = short_seen or raw_len < config.frame_size
        plain = zstd_decompress(wire, config.frame_size) if zstd else wire
        if plain is None or len(plain) != raw_len:
            verdict.frames.append(Frame(b"", offset, 0, True))
            continue
        own = native.frame_checksum(plain, offset)
        verdict.frames.append(Frame(plain, offset, own, not config.encrypt and own != checksum))


def _framing(config: Config, magic: int, flags: int, reserved: int, wire_len: int,
             raw_len: int, is_end: bool, zstd: bool) -> str:
    """The header rules that hold before a payload is read; any break is a framing error."""
    if magic != MAGIC:
        return "magic"
    if reserved:
        return "reserved"
    if flags & ~(FLAG_ZSTD | FLAG_END):
        return "flags"
    if is_end:
        if flags != FLAG_END or wire_len != END_PAYLOAD or raw_len != END_PAYLOAD:
            return "end frame shape"
        return ""
    if raw_len == 0 or raw_len > config.frame_size:
        return "raw length"
    if zstd and not config.allow_zstd:
        return "zstd not negotiated"
    if zstd and (wire_len == 0 or wire_len > config.wire_cap):
        return "compressed length"
    if not zstd and wire_len != raw_len:
        return "raw wire length"
    return ""
