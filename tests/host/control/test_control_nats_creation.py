"""A new NATS control plane opened by many processes at once: its buckets are created once and
every opener gets them (the agents and CLI runs of a new cluster start together)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from ployz.control import Machine, open_control_plane

from .conftest import NatsServer

OPENERS = 12
ROUNDS = 40  # a 2-core machine loses the race in about one round of twenty


def _register(url: str, index: int) -> str:
    machine_id = f"machine-{index}"
    with open_control_plane(url) as cp:
        cp.register_machine(Machine(id=machine_id, overlay_ip=f"10.210.{index}.1",
                                    subnet=f"10.210.{index}.0/24"))
    return machine_id


def test_openers_racing_to_create_the_buckets_all_open_them(nats_server: NatsServer) -> None:
    for _ in range(ROUNDS):
        url = f"nats://{nats_server.url}?bucket_prefix=r{uuid.uuid4().hex[:12]}"
        with ThreadPoolExecutor(OPENERS) as pool:
            registered = set(pool.map(partial(_register, url), range(1, OPENERS + 1)))
        with open_control_plane(url) as cp:
            assert {machine.id for machine in cp.list_machines()} == registered
