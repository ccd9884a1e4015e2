"""A network namespace of the test's own, entered by the test's thread (netlink sockets opened
there belong to it), with an interface standing for the overlay's and loopback up."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.sandbox import netns


@pytest.fixture
def inside_netns() -> Iterator[str]:
    """Runs the test inside a new namespace holding ``ployz0`` (a veth, up, 10.210.0.1/16);
    yields the namespace's name."""
    name = f"pz-net-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (["link", "set", "lo", "up"],
                        ["link", "add", "ployz0", "type", "veth", "peer", "name", "ployz0p"],
                        ["link", "set", "ployz0p", "up"],
                        ["addr", "add", "10.210.0.1/16", "dev", "ployz0"],
                        ["link", "set", "ployz0", "up"]):
            subprocess.run(["ip", "-n", name, *command], check=True)
        with netns.inside(Path("/run/netns") / name):
            yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
