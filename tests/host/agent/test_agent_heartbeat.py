"""An agent heartbeating into a real (SQLite) control plane."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from agent_process import MACHINE_ID

from ployz.control.models import Machine
from ployz.control.url import open_control_plane

pytestmark = pytest.mark.host

WAIT_S = 20.0


def wait_for_heartbeat(url: str) -> Machine:
    deadline = time.monotonic() + WAIT_S
    with open_control_plane(url) as plane:
        while (machine := plane.get_machine(MACHINE_ID)).last_heartbeat is None:
            assert time.monotonic() < deadline, "no heartbeat reached the control plane"
            time.sleep(0.1)
    return machine


def test_heartbeat_reaches_the_control_plane(start_agent, dockerd, tmp_path: Path):
    url = f"sqlite://{tmp_path / 'control.db'}"
    with open_control_plane(url) as plane:
        plane.register_machine(Machine(id=MACHINE_ID, overlay_ip="10.210.0.2",
                                       subnet="10.210.0.0/24"))
    agent = start_agent("--docker-socket", dockerd.socket, "--control", url,
                        "--heartbeat-interval", "0.2")

    machine = wait_for_heartbeat(url)

    assert machine.lifecycle == "active"
    assert agent.client().call("agent.health")["machine_id"] == MACHINE_ID


def test_agent_keeps_serving_when_heartbeats_fail(start_agent, dockerd, tmp_path: Path):
    url = f"sqlite://{tmp_path / 'control.db'}"
    agent = start_agent("--docker-socket", dockerd.socket, "--control", url,
                        "--heartbeat-interval", "0.2")
    log = agent.state_dir.parent / "agent.log"
    deadline = time.monotonic() + WAIT_S
    while "heartbeat of machine machine-a failed" not in log.read_text():
        assert time.monotonic() < deadline, "the failing heartbeat was not logged"
        time.sleep(0.1)
    assert "unknown machine 'machine-a'" in log.read_text()
    assert agent.client().call("agent.health")["machine_id"] == MACHINE_ID
