"""An agent heartbeating into a real (SQLite) control plane."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from ployz.control.models import Machine
from ployz.control.url import open_control_plane
from tests.host.agent.agent_process import MACHINE_ID

pytestmark = pytest.mark.host

WAIT_S = 20.0


def wait_for_heartbeat(url: str) -> Machine:
    deadline = time.monotonic() + WAIT_S
    with open_control_plane(url) as plane:
        while (machine := plane.get_machine(MACHINE_ID)).last_heartbeat is None:
            assert time.monotonic() < deadline, "no heartbeat reached the control plane"
            time.sleep(0.1)
    return machine


@pytest.mark.parametrize("given", ["--control", "--control-file"])
def test_heartbeat_reaches_the_control_plane(start_agent, dockerd, tmp_path: Path, given: str):
    """The URL on the command line, or in the file the membership commands write for it."""
    url = f"sqlite://{tmp_path / 'control.db'}"
    with open_control_plane(url) as plane:
        plane.register_machine(Machine(id=MACHINE_ID, overlay_ip="10.210.0.2",
                                       subnet="10.210.0.0/24"))
    if given == "--control-file":
        (tmp_path / "control.url").write_text(url + "\n")
        control = ["--control-file", str(tmp_path / "control.url")]
    else:
        control = ["--control", url]
    agent = start_agent("--docker-socket", dockerd.socket, *control,
                        "--heartbeat-interval", "0.2")

    machine = wait_for_heartbeat(url)

    assert machine.lifecycle == "active"
    assert agent.client().call("agent.health")["machine_id"] == MACHINE_ID


def wait_for_log(agent, text: str) -> str:
    log = agent.state_dir.parent / "agent.log"
    deadline = time.monotonic() + WAIT_S
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never appeared in the agent's log"
        time.sleep(0.1)
    return log.read_text()


def test_agent_keeps_serving_when_its_machine_is_unknown(start_agent, dockerd, tmp_path: Path):
    url = f"sqlite://{tmp_path / 'control.db'}"
    agent = start_agent("--docker-socket", dockerd.socket, "--control", url,
                        "--heartbeat-interval", "0.2")
    log = wait_for_log(agent, "heartbeat of machine machine-a failed")
    assert "unknown machine 'machine-a'" in log
    assert agent.client().call("agent.health")["machine_id"] == MACHINE_ID


def test_agent_starts_and_serves_while_the_control_plane_is_down(start_agent, dockerd):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    agent = start_agent("--docker-socket", dockerd.socket,
                        "--control", f"nats://127.0.0.1:{port}?timeout=0.5",
                        "--heartbeat-interval", "0.2")
    assert agent.client().call("agent.health")["machine_id"] == MACHINE_ID
    wait_for_log(agent, "heartbeat of machine machine-a failed")
    assert agent.client().call("agent.health")["machine_id"] == MACHINE_ID
