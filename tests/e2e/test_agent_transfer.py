"""A ZFS stream from one machine's agent to another's over the WireGuard overlay, authorised by a
ticket the operator signed: the path every migration takes."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest

from ployz.agent.api import int_prop
from ployz.agent.errors import OutsidePool, RemoteError
from ployz.sandbox.cluster import Cluster
from ployz.transfer.errors import TransferError
from ployz.transfer.keys import load_private_key
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign
from tests.e2e.sandbox_operator import agent

MiB = 1 << 20


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ticket_for(cluster: Cluster, transfer_id: str, dataset: str, toguid: int,
               fromguid: int | None = None) -> str:
    ticket = Ticket(transfer_id, Target("zfs", dataset), time.time() + 300, toguid, fromguid)
    return sign(ticket, load_private_key(cluster.operator_key))


def test_snapshot_moves_between_agents_with_evidence(cluster: Cluster) -> None:
    a, b = cluster.machines[:2]
    name = f"xfer{uuid.uuid4().hex[:6]}"
    source, target = f"{a.pool}/{name}", f"{b.pool}/{name}"
    with agent(cluster, a) as src, agent(cluster, b) as dst:
        mountpoint = f"{a.home}/pool/{name}"
        src.zfs.create(source, mountpoint=mountpoint)
        Path(mountpoint, "data").write_bytes(os.urandom(8 * MiB))
        os.sync()
        src.zfs.snapshot([f"{source}@s1"])
        guid = int_prop(src.zfs.get(f"{source}@s1", ["guid"]), "guid")

        transfer_id, secret = uuid.uuid4().hex, new_secret()
        address = dst.transfer.receive(transfer_id, target, secret=secret).address
        assert address.startswith(b.overlay_ip + ":")
        sent = src.transfer.send(transfer_id, f"{source}@s1", address,
                                 ticket_for(cluster, transfer_id, target, guid), secret=secret)
        # the send's progress stays readable for a while after it ended, at 100 %
        status = src.transfer.send_status(transfer_id)
        assert status.finished and status.bytes == status.total == sent.bytes
        received = dst.transfer.receive_wait(transfer_id, timeout_s=60)
        assert received.state == "committed" and received.result is not None
        assert received.result.committed == sent.committed
        assert sent.committed.guid == guid
        assert sent.committed.snapshot == f"{target}@s1"

        dst.zfs.mount(target, f"{b.home}/pool/{name}")
        assert digest(Path(b.home, "pool", name, "data")) == digest(Path(mountpoint, "data"))


def test_ticket_for_another_dataset_is_refused(cluster: Cluster) -> None:
    a, b = cluster.machines[:2]
    name = f"xfer{uuid.uuid4().hex[:6]}"
    source = f"{a.pool}/{name}"
    with agent(cluster, a) as src, agent(cluster, b) as dst:
        src.zfs.create(source)
        src.zfs.snapshot([f"{source}@s1"])
        guid = int_prop(src.zfs.get(f"{source}@s1", ["guid"]), "guid")
        transfer_id, secret = uuid.uuid4().hex, new_secret()
        address = dst.transfer.receive(transfer_id, f"{b.pool}/{name}", secret=secret).address
        wrong = ticket_for(cluster, transfer_id, f"{b.pool}/elsewhere", guid)
        with pytest.raises(TransferError) as info:  # the engine's own class, from the agent
            src.transfer.send(transfer_id, f"{source}@s1", address, wrong, secret=secret)
        assert isinstance(info.value, RemoteError) and info.value.code.startswith("transfer.")
        dst.transfer.receive_cancel(transfer_id)
        assert dst.transfer.receive_wait(transfer_id, timeout_s=5).state == "failed"
        assert not dst.zfs.exists(f"{b.pool}/{name}")


def test_receive_outside_the_pool_is_refused(cluster: Cluster) -> None:
    b = cluster.machines[1]
    with agent(cluster, b) as dst, pytest.raises(OutsidePool) as info:
        dst.transfer.receive("x", "machine-a/stolen")
    assert (info.value.name, info.value.pool) == ("machine-a/stolen", "machine-b")
