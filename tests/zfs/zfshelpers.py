"""Helpers for the real-ZFS tests: command-line cross-checks, test data, and a send and a
receive run in one process joined by pipes."""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections.abc import Callable

from ployz import zfs


def sh(*args: str, check: bool = True) -> str:
    """Runs a command-line tool (tests may cross-check with the zfs CLI; the product may not)."""
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def write_file(path: str | os.PathLike[str], size: int, seed: int = 0) -> None:
    """Writes ``size`` pseudo-random bytes (incompressible, reproducible from ``seed``)."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = min(remaining, 1 << 20)
            f.write(rng.randbytes(chunk))
            remaining -= chunk


def _run(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def wrapper() -> None:
        try:
            target()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=wrapper)
    thread.start()
    return thread


def send_receive(send: Callable[[int], None], receive: Callable[[int], None],
                 cut_after: int | None = None) -> list[BaseException]:
    """Pipes ``send(fd)`` into ``receive(fd)``; with ``cut_after`` only that many bytes reach the
    receiver (a stream cut mid-way). Returns the sender's errors; the receiver's propagate."""
    send_r, send_w = os.pipe()
    sender_errors: list[BaseException] = []

    def sending() -> None:
        try:
            send(send_w)
        finally:
            os.close(send_w)

    sender = _run(sending, sender_errors)
    recv_r, recv_w = os.pipe()
    relay_errors: list[BaseException] = []

    def relaying() -> None:
        moved = 0
        try:
            while cut_after is None or moved < cut_after:
                want = 1 << 16 if cut_after is None else min(1 << 16, cut_after - moved)
                chunk = os.read(send_r, want)
                if not chunk:
                    break
                os.write(recv_w, chunk)
                moved += len(chunk)
        finally:
            os.close(recv_w)
            os.close(send_r)

    relay = _run(relaying, relay_errors)
    try:
        receive(recv_r)
    finally:
        os.close(recv_r)
        relay.join()
        sender.join()
    return sender_errors + relay_errors


def transfer(snapshot: str, target: str, *, base: str | None = None, raw: bool = False,
             force: bool = False) -> None:
    errors = send_receive(lambda fd: zfs.send(snapshot, fd, base=base, raw=raw),
                          lambda fd: zfs.receive(target, fd, raw=raw, force=force))
    assert not errors, errors
