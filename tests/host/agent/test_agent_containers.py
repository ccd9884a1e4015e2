"""Container RPCs of a real agent against the session's real Docker daemon."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ployz.agent.errors import BadParams, RemoteError
from ployz.runtime.model import Mount, ServiceSpec, service_labels

pytestmark = pytest.mark.host


@pytest.fixture
def spec(dockerd, tmp_path: Path) -> ServiceSpec:
    volume = tmp_path / "volume"
    volume.mkdir()
    return ServiceSpec(
        namespace=f"a{uuid.uuid4().hex[:8]}",
        service="app",
        deploy="d1",
        image=dockerd.image,
        command=["sh", "-c", "echo $MESSAGE > /data/hello; sleep 600"],
        env={"MESSAGE": "written through the agent"},
        mounts=[Mount(source=str(volume), target="/data")],
        healthcheck={"test": ["CMD", "test", "-f", "/data/hello"], "interval_s": 0.2,
                     "start_period_s": 30},
    )


def test_container_lifecycle_through_the_agent(agent, spec: ServiceSpec):
    client = agent.client()
    name = spec.container_name
    assert client.call("container.has_image", {"image": spec.image}) is True

    created = client.call("container.create", {"spec": spec.model_dump(mode="json")})
    assert created["state"] == "created" and created["name"] == name
    client.call("container.start", {"name": name})
    ready = client.call("container.wait_ready", {"name": name, "timeout_s": 30}, timeout_s=40)
    assert ready["health"] == "healthy"
    assert (Path(spec.mounts[0].source) / "hello").read_text() == "written through the agent\n"

    listed = client.call("container.list", {"labels": service_labels(spec.namespace)})
    assert [c["name"] for c in listed] == [name]
    assert client.call("agent.health")["containers"] >= 1

    stopped = client.call("container.stop", {"name": name, "timeout_s": 1})
    assert stopped["state"] == "exited"
    client.call("container.remove", {"name": name})
    assert client.call("container.list", {"labels": service_labels(spec.namespace)}) == []

    journal = [op["method"] for op in reversed(client.call("agent.operations"))]
    assert journal == ["container.create", "container.start", "container.stop", "container.remove"]


def test_runtime_errors_arrive_typed_with_details(agent, spec: ServiceSpec):
    client = agent.client()
    missing = spec.model_copy(update={"image": "ployz-test/absent:1"})
    with pytest.raises(RemoteError) as excinfo:
        client.call("container.create", {"spec": missing.model_dump(mode="json")})
    assert excinfo.value.code == "runtime.ImageMissing"
    assert excinfo.value.details == {"image": "ployz-test/absent:1"}

    with pytest.raises(RemoteError) as excinfo:
        client.call("container.inspect", {"name": "ployz-nobody"})
    assert excinfo.value.code == "runtime.ContainerNotFound"
    assert excinfo.value.details == {"container": "ployz-nobody"}


def test_invalid_service_definition_is_refused_with_field_paths(agent, spec: ServiceSpec):
    bad = spec.model_dump(mode="json")
    bad["mounts"][0]["target"] = "relative"
    bad["restart"] = "sometimes"
    with pytest.raises(BadParams) as excinfo:
        agent.client().call("container.create", {"spec": bad})
    fields = {error["field"] for error in excinfo.value.details["errors"]}
    assert fields == {"spec.mounts.0.target", "spec.restart"}
    assert agent.client().call("agent.operations") == []


def test_unreachable_docker_daemon_names_its_socket(start_agent, tmp_path: Path):
    socket = str(tmp_path / "no-docker.sock")
    agent = start_agent("--docker-socket", socket)
    client = agent.client()
    with pytest.raises(RemoteError) as excinfo:
        client.call("container.list", {"labels": {}})
    assert excinfo.value.code == "runtime.DaemonUnreachable"
    assert excinfo.value.details == {"socket": socket}
    problems = client.call("agent.health")["problems"]
    assert any(socket in problem for problem in problems)
