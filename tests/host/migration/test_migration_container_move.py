"""``ployzctl migrate apply`` of a service without volumes (a plain container move) between two
real agent processes on loopback addresses, sharing the test run's private Docker daemon, with a
real SQLite control plane: the move commits, a held lock is refused, and a target agent that
dies before the commit aborts the move with the source running again, from where ``apply`` run
again completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ployz.control import Machine, deploy_lock_name
from ployz.runtime.docker_runtime import DockerRuntime
from ployz.runtime.model import service_labels
from ployz.transfer.addresses import parse_address
from ployz.transfer.keys import load_private_key
from tests.host.agent.agent_process import AgentProcess
from tests.host.deploy.deploy_cluster import Cluster

pytestmark = pytest.mark.host

MANIFEST = textwrap.dedent("""
    namespace = "{namespace}"
    [[services]]
    name = "web"
    placement = "machine-a"
    [services.template]
    image = "{image}"
    command = "sleep 600"
    restart = "no"
    readiness = {{ test = ["CMD", "true"], interval_s = 0.2 }}
""")


@dataclass
class Move:
    cluster: Cluster
    namespace: str
    runtime: DockerRuntime
    target: AgentProcess
    port: str

    def ployzctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.ployzctl(*args, env={"PLOYZ_AGENT_PORT": self.port})

    def apply(self) -> tuple[int, list[dict[str, Any]], str]:
        done = self.ployzctl("migrate", "apply", f"{self.namespace}/web", "--to", "machine-b",
                             "--json")
        events = [json.loads(line) for line in done.stdout.splitlines()]
        return done.returncode, [e for e in events if "event" in e], done.stderr

    def containers(self) -> list[tuple[str, str]]:
        """(deploy id, state) of the service's containers (both agents share one daemon)."""
        return [(c.labels["ployz.deploy"], c.state)
                for c in self.runtime.list(service_labels(self.namespace))]

    def placement(self) -> tuple[str, str]:
        with self.cluster.plane() as cp:
            state = cp.namespace(self.namespace)
        return state.services["web"].machine, state.routes["web"].machine


@pytest.fixture
def move(cluster: Cluster, dockerd, tmp_path: Path) -> Iterator[Move]:
    key = load_private_key(cluster.key)
    source = AgentProcess(tmp_path / "a-state", key, ["--docker-socket", dockerd.socket],
                          machine_id="machine-a")
    target = AgentProcess(tmp_path / "b-state", key, ["--docker-socket", dockerd.socket],
                          machine_id="machine-b")
    runtime = DockerRuntime(dockerd.socket)
    namespace = f"m{uuid.uuid4().hex[:8]}"
    try:
        source.start("127.0.0.2:0")
        port = str(parse_address(source.address)[1])
        target.start(f"127.0.0.3:{port}")
        with cluster.plane() as cp:
            for machine_id, ip in (("machine-a", "127.0.0.2"), ("machine-b", "127.0.0.3")):
                cp.register_machine(Machine(id=machine_id, overlay_ip=ip, subnet=f"{ip}/32"))
        moving = Move(cluster, namespace, runtime, target, port)
        manifest = tmp_path / "deploy.toml"
        manifest.write_text(MANIFEST.format(namespace=namespace, image=dockerd.image))
        deployed = moving.ployzctl("deploy", "-f", str(manifest))
        assert deployed.returncode == 0, deployed.stderr
        yield moving
    finally:
        source.close()
        target.close()
        for container in runtime.list(service_labels(namespace)):
            runtime.remove(container.name, force=True)
        runtime.close()


def test_a_service_without_volumes_moves_and_commits(move: Move) -> None:
    [(old, state)] = move.containers()
    assert state == "running"
    status, events, stderr = move.apply()
    assert status == 0, stderr
    assert [e["phase"] for e in events if e["event"] == "phase"] == [
        "lock", "pre-copy", "fence", "final-send", "start", "commit", "cleanup"]
    done = events[-1]
    assert done["event"] == "done" and done["target"] == "machine-b"
    assert move.containers() == [(done["deploy_id"], "running")]
    assert old != done["deploy_id"]
    assert move.placement() == ("machine-b", "machine-b")
    with move.cluster.plane() as cp:
        record = cp.get_deploy(done["deploy_id"])
        assert (record.kind, record.status, record.phase) == ("migrate", "committed", "done")
        assert cp.get_lease(deploy_lock_name(move.namespace)).released


def test_a_lock_held_by_another_deploy_is_refused(move: Move) -> None:
    with move.cluster.plane() as cp:
        cp.acquire(deploy_lock_name(move.namespace), "someone-else", 600)
    before = move.cluster.dump()
    containers = move.containers()
    status, _, stderr = move.apply()
    assert status == 1
    assert f"lock 'deploy/{move.namespace}' is held by 'someone-else'" in stderr
    assert move.cluster.dump() == before
    assert move.containers() == containers


def test_target_agent_lost_before_commit_aborts_then_apply_again_completes(move: Move) -> None:
    [(old, state)] = move.containers()
    assert state == "running"
    process = subprocess.Popen(
        [sys.executable, "-m", "ployzctl", "migrate", "apply", f"{move.namespace}/web", "--to",
         "machine-b", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PLOYZ_CONTROL": move.cluster.url, "PLOYZ_KEY": str(move.cluster.key),
             "PLOYZ_AGENT_PORT": move.port})
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:
        if json.loads(line) == {"event": "phase", "phase": "start"}:
            # Held still while the target's agent dies, so the loss lands exactly here.
            process.send_signal(signal.SIGSTOP)
            move.target.kill()
            process.send_signal(signal.SIGCONT)
            break
    rest = process.stdout.read()
    stderr = process.stderr.read()
    assert process.wait() == 1, stderr
    assert "aborted during start" in stderr
    assert "restarted container" in stderr and "on machine-a" in stderr
    assert "LEFT BEHIND" in stderr and "machine-b" in stderr
    aborted = [json.loads(line) for line in rest.splitlines()
               if json.loads(line).get("event") == "aborted"]
    assert len(aborted) == 1 and aborted[0]["step"] == "start"
    # The container created on the target before the fence is what the lost agent could not
    # remove: reported left behind, removed by the next apply.
    assert sorted(move.containers()) == sorted([(old, "running"),
                                                (aborted[0]["deploy_id"], "created")])
    assert move.placement() == ("machine-a", "machine-a")

    move.target.start(f"127.0.0.3:{move.port}")
    status, events, stderr = move.apply()
    assert status == 0, stderr
    [retried] = [e for e in events if e["event"] == "rolled-back"]
    assert retried["left"] == []
    done = events[-1]
    assert move.containers() == [(done["deploy_id"], "running")]
    assert move.placement() == ("machine-b", "machine-b")


def test_drain_marks_the_machine_and_moves_its_services_away(move: Move) -> None:
    done = move.ployzctl("machine", "drain", "machine-a", "--migrate", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"event": "drain", "service": f"{move.namespace}/web",
            "target": "machine-b"} in events
    assert events[-1]["event"] == "drained"
    [result] = events[-1]["results"]
    assert (result["service"], result["target"], result["status"]) == (
        f"{move.namespace}/web", "machine-b", "moved")
    assert move.placement() == ("machine-b", "machine-b")
    lifecycles = {m["id"]: m["lifecycle"] for m in json.loads(
        move.ployzctl("machine", "ls", "--json").stdout)}
    assert (lifecycles["machine-a"], lifecycles["machine-b"]) == ("draining", "active")


def test_nothing_moves_onto_a_draining_machine_until_it_is_activated(move: Move) -> None:
    drained = move.ployzctl("machine", "drain", "machine-b")
    assert drained.returncode == 0, drained.stderr
    before = move.cluster.dump()
    status, _, stderr = move.apply()
    assert status == 1
    assert "machine-b" in stderr and "draining" in stderr
    assert move.cluster.dump() == before
    assert move.ployzctl("machine", "activate", "machine-b").returncode == 0
    status, _, stderr = move.apply()
    assert status == 0, stderr
    assert move.placement() == ("machine-b", "machine-b")


def test_drain_of_an_unknown_machine_is_refused(move: Move) -> None:
    before = move.cluster.dump()
    done = move.ployzctl("machine", "drain", "machine-z", "--migrate")
    assert done.returncode == 1
    assert "machine-z" in done.stderr
    assert move.cluster.dump() == before
