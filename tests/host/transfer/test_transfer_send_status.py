"""The agent's send bookkeeping (``transfer.send`` records, ``transfer.send_status`` reports) over
a real stream: the agent's own method runs the engine over loopback to a real receiver. On a
machine the agent sends ZFS snapshots; here its source is a file, the only thing that differs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.context import AgentContext
from ployz.agent.errors import UnknownTransfer
from ployz.agent.methods.transfers import TransferMethods
from ployz.transfer.errors import TransferError
from ployz.transfer.files import FileSource
from ployz.transfer.protocol import DEFAULT_FRAME_SIZE
from ployz.transfer.session import parse_secret
from ployz.transfer.tickets import Target, Ticket, sign
from tests.host.transfer.transfer_data import make_data

SECRET = "5e" * 32  # the transfer's secret, as an orchestrator hands it to both agents
SIZE = 6 * DEFAULT_FRAME_SIZE
RATE = SIZE / 3  # bytes per second: the send lasts about 3 s, several polls of moving frames


def agent_methods(source: Path, key: Ed25519PrivateKey) -> TransferMethods:
    context = AgentContext(machine_id="machine-a", pool="tank", runtime=None,  # type: ignore[arg-type]
                           state=None, started_ms=0,  # type: ignore[arg-type]
                           address="127.0.0.1:0", trusted=(key.public_key(),))
    return TransferMethods(context, source_for=lambda snapshot, base: FileSource(source))


def ticket(transfer_id: str, dst: Path, key: Ed25519PrivateKey) -> str:
    return sign(Ticket(transfer_id, Target("file", str(dst.absolute())), time.time() + 60,
                       None, None), key)


def test_status_follows_a_running_send_to_the_end(tmp_path: Path, start_receiver,
                                                  signing_key: Ed25519PrivateKey) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(make_data("random", SIZE))
    methods = agent_methods(src, signing_key)
    receiver = start_receiver(dst, secret=parse_secret(SECRET))
    host, port = receiver.address
    outcome: dict[str, Any] = {}

    def send() -> None:
        outcome["summary"] = methods.send("t1", "tank/db@s1", f"{host}:{port}",
                                          ticket("t1", dst, signing_key), bwlimit=RATE,
                                          secret=SECRET)

    sender = threading.Thread(target=send)
    sender.start()
    samples = []
    while sender.is_alive():
        try:
            samples.append(methods.send_status("t1"))
        except UnknownTransfer:  # the thread has not registered the send yet
            assert not samples, "a running send's status disappeared"
        time.sleep(0.2)
    sender.join()
    assert outcome["summary"].bytes == SIZE

    moving = [s for s in samples if 0 < s.bytes < SIZE]
    assert len({s.bytes for s in moving}) >= 3, samples
    assert all(not s.finished for s in moving)
    assert all(s.total == SIZE and s.wire_bytes > 0 for s in moving)
    assert moving[-1].rate > 0 and (moving[-1].eta_s or 0) > 0
    sent = [s.bytes for s in samples]
    assert sent == sorted(sent), "bytes sent went backwards"

    final = methods.send_status("t1")  # within the grace period after the end
    assert (final.bytes, final.total, final.eta_s, final.finished) == (SIZE, SIZE, 0.0, True)
    assert receiver.result().bytes == SIZE


def test_a_failed_send_is_reported_unfinished(tmp_path: Path, start_receiver,
                                              signing_key: Ed25519PrivateKey) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"x" * 1000)
    methods = agent_methods(src, signing_key)
    host, port = start_receiver(dst, trusted=Ed25519PrivateKey.generate(),
                                secret=parse_secret(SECRET)).address
    with pytest.raises(TransferError):  # the receiver does not trust the ticket's key
        methods.send("t2", "tank/db@s1", f"{host}:{port}", ticket("t2", dst, signing_key),
                     secret=SECRET)
    status = methods.send_status("t2")
    assert status.finished is False and status.bytes == 0


def test_unknown_send_is_refused(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    methods = agent_methods(tmp_path / "none", signing_key)
    with pytest.raises(UnknownTransfer, match="no send with transfer id 'nope'"):
        methods.send_status("nope")
