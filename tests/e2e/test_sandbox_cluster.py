"""The sandbox cluster as ``machine init``/``invite``/``join`` formed it: machines reachable over
the WireGuard overlay their agents keep, agents answering signed calls there, each machine with
its own pool (and Docker daemon, but machine-c), all known to the NATS control plane."""

from __future__ import annotations

import subprocess

from ployz.agent.client import AgentClient
from ployz.agent.remote import RemoteAgent
from ployz.control import open_control_plane
from ployz.runtime.testimage import TEST_IMAGE
from ployz.sandbox.cluster import Cluster
from ployz.transfer.keys import load_private_key


def test_agents_answer_signed_calls_over_the_overlay(cluster: Cluster) -> None:
    key = load_private_key(cluster.operator_key)
    for machine in cluster.machines:
        with AgentClient(machine.agent_address, key) as client:
            assert client.machine_id == machine.id
            capacity = RemoteAgent(client).zfs.capacity()
            assert capacity.pool == machine.pool and capacity.free > 0
            if machine.docker:
                assert RemoteAgent(client).containers.has_image(TEST_IMAGE) is True


def test_overlay_is_kernel_wireguard_kept_by_the_agents(cluster: Cluster) -> None:
    a, b = cluster.machines[:2]
    shown = subprocess.run(["ip", "netns", "exec", a.endpoint.netns, "wg", "show",
                            a.config.wireguard_interface, "allowed-ips"],
                           capture_output=True, text=True, check=True).stdout
    assert f"{b.overlay_ip}/32" in shown
    assert b.config.endpoint == b.endpoint.wireguard_endpoint


def test_machines_are_in_the_nats_control_plane_with_heartbeats(cluster: Cluster) -> None:
    assert cluster.control_url.startswith("nats://")
    with open_control_plane(cluster.control_url) as control:
        machines = {m.id: m for m in control.list_machines()}
        assert control.get_cluster().allocations.keys() == machines.keys()
    assert set(machines) == {m.id for m in cluster.machines}
    assert machines["machine-a"].overlay_ip == cluster.machines[0].overlay_ip
    assert all(m.lifecycle == "active" and m.last_heartbeat for m in machines.values())


def test_ployzctl_is_configured_for_the_operator(cluster: Cluster) -> None:
    env = cluster.environment()
    assert env["PLOYZ_CONTROL"] == cluster.control_url
    done = subprocess.run(["ployzctl", "agent", "call", "--address",
                           cluster.machines[1].agent_address, "--key", env["PLOYZ_KEY"],
                           "agent.health"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "machine-b" in done.stdout
