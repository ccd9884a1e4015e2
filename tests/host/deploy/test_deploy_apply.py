"""``ployzctl deploy -f`` end to end for services without volumes: a real agent process on
loopback runs the containers on the test run's private Docker daemon; the control plane is a real
SQLite file. (Volumes need ZFS, which only the VM has: their deploy is not covered here.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ployz.control import Machine, deploy_lock_name
from ployz.runtime.docker_runtime import SERVICE_NETWORK, DockerRuntime
from ployz.runtime.model import service_labels
from ployz.transfer.addresses import parse_address
from ployz.transfer.keys import load_private_key
from tests.host.agent.agent_process import MACHINE_ID, AgentProcess
from tests.host.deploy.deploy_cluster import Cluster

pytestmark = pytest.mark.host

MANIFEST = textwrap.dedent("""
    namespace = "{namespace}"
    [[services]]
    name = "web"
    placement = "machine-a"
    [services.template]
    image = "{image}"
    command = "{command}"
    env = {{ VERSION = "{version}" }}
    restart = "no"
    readiness = {{ test = ["CMD", "true"], interval_s = 0.2 }}
""")


class Deployment:
    """One namespace deployed through ``ployzctl`` onto the agent of machine-a."""

    def __init__(self, cluster: Cluster, image: str, runtime: DockerRuntime,
                 tmp_path: Path) -> None:
        self.cluster = cluster
        self.namespace = f"t{uuid.uuid4().hex[:8]}"
        self.image = image
        self.runtime = runtime
        self.tmp_path = tmp_path
        self.port = ""

    def deploy(self, version: str, command: str = "sleep 600", image: str | None = None):
        path = self.tmp_path / f"{version}.toml"
        path.write_text(MANIFEST.format(namespace=self.namespace, image=image or self.image,
                                        command=command, version=version))
        return self.cluster.ployzctl("deploy", "-f", str(path), "--json",
                                     env={"PLOYZ_AGENT_PORT": self.port})

    def containers(self) -> list[tuple[str, str, str]]:
        return [(c.name, c.state, c.labels["ployz.deploy"])
                for c in self.runtime.list(service_labels(self.namespace))]

    def addresses(self) -> list[str]:
        """Each running container's address on the service bridge, as Docker reports it."""
        client = docker.DockerClient(base_url=f"unix://{self.runtime.socket}")
        try:
            return [client.containers.get(c.name).attrs["NetworkSettings"]["Networks"]
                    [SERVICE_NETWORK]["IPAddress"]
                    for c in self.runtime.list(service_labels(self.namespace))
                    if c.state == "running"]
        finally:
            client.close()

    def facts(self):
        """The namespace's services, routes and last commit (not its lock, which every deploy
        takes and releases)."""
        with self.cluster.plane() as cp:
            state = cp.namespace(self.namespace)
        return state.services, state.volumes, state.routes, state.last_commit


@pytest.fixture
def deployment(cluster: Cluster, dockerd, tmp_path: Path) -> Iterator[Deployment]:
    agent = AgentProcess(tmp_path / "agent-state", load_private_key(cluster.key),
                         ["--docker-socket", dockerd.socket])
    runtime = DockerRuntime(dockerd.socket)
    deployment = Deployment(cluster, dockerd.image, runtime, tmp_path)
    try:
        agent.start()
        deployment.port = str(parse_address(agent.address)[1])
        with cluster.plane() as cp:  # machine-a's agent listens on loopback in this test
            cp.register_machine(Machine(id=MACHINE_ID, overlay_ip="127.0.0.1",
                                        subnet="127.0.0.0/8"))
        yield deployment
    finally:
        agent.close()
        for container in runtime.list(service_labels(deployment.namespace)):
            runtime.remove(container.name, force=True)
        runtime.close()


def test_deploy_starts_the_service_commits_and_replaces_it(deployment: Deployment):
    first = deployment.deploy("v1")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    deploy_id = result["deploy_id"]
    assert result["commit"] == 1
    assert deployment.containers() == [
        (f"ployz-{deployment.namespace}-web-{deploy_id}", "running", deploy_id)
    ]
    with deployment.cluster.plane() as cp:
        record = cp.get_deploy(deploy_id)
        assert (record.status, record.phase, record.commit_seq) == ("committed", "done", 1)
        assert cp.get_lease(deploy_lock_name(deployment.namespace)).released
        state = cp.namespace(deployment.namespace)
        assert state.services["web"].machine == "machine-a"
        assert state.routes["web"].machine == "machine-a"
        address = state.services["web"].address
    assert address is not None and deployment.addresses() == [address]
    listed = deployment.cluster.ployzctl("service", "ls", "--json")
    assert [(s["namespace"], s["name"], s["machine"]) for s in json.loads(listed.stdout)] == [
        (deployment.namespace, "web", "machine-a")
    ]

    again = deployment.deploy("v1")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["commit"] is None
    assert deployment.containers()[0][2] == deploy_id

    replaced = deployment.deploy("v2")
    assert replaced.returncode == 0, replaced.stderr
    second = json.loads(replaced.stdout)
    assert second["commit"] == 2
    assert second["plan"]["services"][0]["changes"] == ["config"]
    assert deployment.containers() == [
        (f"ployz-{deployment.namespace}-web-{second['deploy_id']}", "running",
         second["deploy_id"])
    ]
    # The replacement took the address over: the old container stopped first.
    assert deployment.addresses() == [address]


def test_service_that_fails_to_start_is_rolled_back(deployment: Deployment):
    assert deployment.deploy("v1").returncode == 0
    running = deployment.containers()
    facts = deployment.facts()

    failed = deployment.deploy("v2", command="sh -c 'echo bad config; exit 3'")
    assert failed.returncode == 1
    assert "failed in phase apply" in failed.stderr
    assert "bad config" in failed.stderr
    assert "undone: removed container" in failed.stderr
    assert "nothing was committed" in failed.stderr
    assert deployment.containers() == running
    assert deployment.facts() == facts
    with deployment.cluster.plane() as cp:
        statuses = [d.status for d in cp.list_deploys(deployment.namespace)]
        assert statuses == ["committed", "failed"]
        assert cp.get_lease(deploy_lock_name(deployment.namespace)).released


def test_image_missing_on_the_machine_is_refused_before_any_change(deployment: Deployment):
    before = deployment.cluster.dump()
    refused = deployment.deploy("v1", image="ployz-test/absent:1")
    assert refused.returncode == 1
    assert "image 'ployz-test/absent:1' is not on machine 'machine-a'" in refused.stderr
    assert deployment.cluster.dump() == before
    assert deployment.containers() == []


def test_deploy_lock_held_by_another_deploy_is_refused_before_any_change(
    deployment: Deployment,
):
    with deployment.cluster.plane() as cp:
        cp.acquire(deploy_lock_name(deployment.namespace), "someone-else", 600)
    before = deployment.cluster.dump()
    refused = deployment.deploy("v1")
    assert refused.returncode == 1
    assert f"lock 'deploy/{deployment.namespace}' is held by 'someone-else'" in refused.stderr
    assert deployment.cluster.dump() == before
    assert deployment.containers() == []


@pytest.mark.parametrize("phase", ["apply", "commit", "cleanup"])
def test_a_deploy_killed_at_a_phase_boundary_is_settled_by_running_it_again(
        deployment: Deployment, phase: str):
    first = json.loads(deployment.deploy("v1").stdout)["deploy_id"]
    path = deployment.tmp_path / "v2.toml"
    path.write_text(MANIFEST.format(namespace=deployment.namespace, image=deployment.image,
                                    command="sleep 600", version="v2"))
    killed = subprocess.Popen(
        [sys.executable, "-m", "ployzctl", "deploy", "-f", str(path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PLOYZ_CONTROL": deployment.cluster.url,
             "PLOYZ_KEY": str(deployment.cluster.key), "PLOYZ_AGENT_PORT": deployment.port})
    assert killed.stderr is not None
    for line in killed.stderr:  # with --json the run's events go to stderr, for a person
        if line.strip() == f"== {phase}":
            killed.kill()
            break
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the deploy ended before the phase"
    with deployment.cluster.plane() as cp:
        (interrupted,) = [d for d in cp.list_deploys(deployment.namespace) if d.id != first]

    again = deployment.deploy("v2")
    assert again.returncode == 0, again.stderr
    with deployment.cluster.plane() as cp:
        settled = cp.get_deploy(interrupted.id)
        state = cp.namespace(deployment.namespace)
        assert cp.get_lease(deploy_lock_name(deployment.namespace)).released
    current = json.loads(again.stdout)["deploy_id"] or interrupted.id
    action = "roll-back" if settled.commit_seq is None else "cleanup"
    settling = [line for line in again.stderr.splitlines() if line.startswith("settling ")]
    assert settling == [f"settling the unfinished run {interrupted.id}: {action} ({phase})"]
    if settled.commit_seq is None:  # killed before its commit: undone, then deployed anew
        assert (settled.status, settled.detail["rolled_back"]) == ("failed", True)
        assert current != interrupted.id
    else:
        assert (settled.status, settled.phase) == ("committed", "done")
    assert [(status, d) for _, status, d in deployment.containers()] == [("running", current)]
    assert state.services["web"].config["env"] == {"VERSION": "v2"}


def test_a_commit_waits_for_routing_bounded_and_names_who_did_not_confirm(
        deployment: Deployment):
    """These agents keep no routing, so no machine confirms: the deploy waits the second it
    is given, then goes on and names every live machine."""
    path = deployment.tmp_path / "v1.toml"
    path.write_text(MANIFEST.format(namespace=deployment.namespace, image=deployment.image,
                                    command="sleep 600", version="v1"))
    started = time.monotonic()
    done = deployment.cluster.ployzctl("deploy", "-f", str(path), "--route-wait", "1",
                                       env={"PLOYZ_AGENT_PORT": deployment.port})
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1
    assert "routing of commit #1 applied by no machine" in done.stdout
    assert "NOT confirmed by machine-a, machine-b, machine-c in time" in done.stdout
