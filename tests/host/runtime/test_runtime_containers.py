"""DockerRuntime against a real Docker daemon started by the session fixture."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from ployz.runtime.docker_runtime import DockerRuntime
from ployz.runtime.errors import (
    ContainerExists,
    ContainerExited,
    ContainerNotFound,
    ContainerUnhealthy,
    DaemonUnreachable,
    ImageMissing,
    MountSourceMissing,
    WaitTimeout,
)
from ployz.runtime.model import (
    LABEL_DEPLOY,
    Healthcheck,
    Mount,
    Resources,
    ServiceSpec,
    service_labels,
)

pytestmark = pytest.mark.host






def spec(dockerd, namespace: str, **overrides) -> ServiceSpec:
    fields = {
        "namespace": namespace,
        "service": "web",
        "deploy": "d1",
        "image": dockerd.image,
        "command": ["sleep", "600"],
    }
    fields.update(overrides)
    return ServiceSpec(**fields)


def test_create_start_writes_to_mounted_directory_as_configured(
    runtime, dockerd, namespace, tmp_path: Path
):
    volume = tmp_path / "volume"
    volume.mkdir()
    service = spec(
        dockerd,
        namespace,
        command=["sh", "-c", 'echo "$GREETING from $(id -u)" > /data/out; sleep 600'],
        env={"GREETING": "hello"},
        mounts=[Mount(source=str(volume), target="/data")],
        labels={"team": "storage"},
    )
    created = runtime.create(service)
    assert created.state == "created"
    assert created.started_at is None

    started = runtime.start(service.container_name)
    ready = runtime.wait_ready(service.container_name, timeout_s=30)

    assert started.name == ready.name == f"ployz-{namespace}-web-d1"
    assert ready.state == "running" and ready.health is None
    assert ready.labels["team"] == "storage" and ready.labels[LABEL_DEPLOY] == "d1"
    assert ready.mounts == [Mount(source=str(volume), target="/data")]
    assert (volume / "out").read_text() == "hello from 0\n"


def test_runs_as_configured_user(runtime, dockerd, namespace, tmp_path: Path):
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o777)
    volume.chmod(0o777)
    service = spec(
        dockerd,
        namespace,
        command=["sh", "-c", "id -u > /data/uid; sleep 600"],
        user="nobody",
        mounts=[Mount(source=str(volume), target="/data")],
    )
    runtime.create(service)
    runtime.start(service.container_name)
    runtime.wait_ready(service.container_name, timeout_s=30)
    assert (volume / "uid").read_text() == "65534\n"


def test_stop_inspect_remove_lifecycle(runtime, dockerd, namespace):
    service = spec(dockerd, namespace)
    runtime.create(service)
    runtime.start(service.container_name)
    runtime.wait_ready(service.container_name, timeout_s=30)

    stopped = runtime.stop(service.container_name, timeout_s=1)
    assert stopped.state == "exited"
    assert stopped.exit_code is not None
    assert runtime.inspect(service.container_name).state == "exited"

    runtime.remove(service.container_name)
    with pytest.raises(ContainerNotFound) as excinfo:
        runtime.inspect(service.container_name)
    assert excinfo.value.name == service.container_name


def test_list_selects_by_labels(runtime, dockerd, namespace):
    web = spec(dockerd, namespace, service="web")
    db = spec(dockerd, namespace, service="db")
    runtime.create(web)
    runtime.create(db)

    assert [c.name for c in runtime.list(service_labels(namespace))] == [
        db.container_name,
        web.container_name,
    ]
    assert [c.name for c in runtime.list(service_labels(namespace, "db"))] == [db.container_name]
    assert runtime.list(service_labels(namespace, "absent")) == []


def test_healthcheck_waits_for_healthy(runtime, dockerd, namespace):
    service = spec(
        dockerd,
        namespace,
        command=["sh", "-c", "sleep 1; touch /tmp/ready; sleep 600"],
        healthcheck=Healthcheck(
            test=["CMD", "test", "-f", "/tmp/ready"], interval_s=0.2, start_period_s=30
        ),
    )
    runtime.create(service)
    runtime.start(service.container_name)
    ready = runtime.wait_ready(service.container_name, timeout_s=30)
    assert ready.health == "healthy"


def test_failing_healthcheck_is_reported_with_its_output(runtime, dockerd, namespace):
    service = spec(
        dockerd,
        namespace,
        healthcheck=Healthcheck(
            test=["CMD-SHELL", "echo not-ready-yet; false"], interval_s=0.2, retries=2
        ),
    )
    runtime.create(service)
    runtime.start(service.container_name)
    with pytest.raises(ContainerUnhealthy) as excinfo:
        runtime.wait_ready(service.container_name, timeout_s=30)
    assert "not-ready-yet" in excinfo.value.last_check


@pytest.mark.parametrize("restart", ["no", "always"])
def test_container_that_exits_fails_the_wait_with_its_output(
    runtime, dockerd, namespace, restart
):
    # The healthcheck keeps the container not-ready until it has run for a moment, so the wait
    # cannot catch it in the instant between start and exit.
    service = spec(
        dockerd,
        namespace,
        command=["sh", "-c", "echo broken config >&2; exit 3"],
        restart=restart,
        healthcheck=Healthcheck(test=["CMD", "true"], interval_s=5),
    )
    runtime.create(service)
    runtime.start(service.container_name)
    with pytest.raises(ContainerExited) as excinfo:
        runtime.wait_ready(service.container_name, timeout_s=30)
    # With a restart policy, the wait may see the container between two crashes, already
    # running again: Docker has then forgotten the status, and the error says so.
    expected_codes = {3} if restart == "no" else {3, None}
    assert excinfo.value.exit_code in expected_codes
    assert "broken config" in excinfo.value.log_tail


def test_wait_times_out_while_still_starting(runtime, dockerd, namespace):
    service = spec(
        dockerd,
        namespace,
        healthcheck=Healthcheck(test=["CMD", "true"], interval_s=60, start_period_s=60),
    )
    runtime.create(service)
    runtime.start(service.container_name)
    with pytest.raises(WaitTimeout) as excinfo:
        runtime.wait_ready(service.container_name, timeout_s=0.5)
    assert excinfo.value.state == "running"


def test_missing_image_is_a_typed_error(runtime, dockerd, namespace):
    with pytest.raises(ImageMissing) as excinfo:
        runtime.create(spec(dockerd, namespace, image="ployz-test/absent:1"))
    assert "ployz-test/absent:1" in excinfo.value.image
    assert runtime.list(service_labels(namespace)) == []


def test_duplicate_container_is_a_typed_error(runtime, dockerd, namespace):
    service = spec(dockerd, namespace)
    runtime.create(service)
    with pytest.raises(ContainerExists):
        runtime.create(service)


def test_missing_mount_source_is_refused_before_anything_is_created(
    runtime, dockerd, namespace, tmp_path: Path
):
    absent = str(tmp_path / "not-mounted")
    with pytest.raises(MountSourceMissing) as excinfo:
        runtime.create(spec(dockerd, namespace, mounts=[Mount(source=absent, target="/data")]))
    assert excinfo.value.source == absent
    assert runtime.list(service_labels(namespace)) == []


@pytest.mark.parametrize("operation", ["start", "stop", "remove", "inspect", "wait_ready"])
def test_operations_on_unknown_container_name_it(runtime, operation):
    with pytest.raises(ContainerNotFound) as excinfo:
        getattr(runtime, operation)("ployz-no-such-container")
    assert excinfo.value.name == "ployz-no-such-container"


def test_unreachable_daemon_names_the_socket(tmp_path: Path):
    socket = str(tmp_path / "nobody-listens.sock")
    with pytest.raises(DaemonUnreachable) as excinfo:
        DockerRuntime(socket).version()
    assert excinfo.value.socket == socket
    assert socket in str(excinfo.value)


def test_resource_limits_reach_the_daemon(runtime, dockerd, namespace):
    service = spec(dockerd, namespace, resources=Resources(memory_bytes=64 << 20, cpus=0.5))
    runtime.create(service)
    client = docker.DockerClient(base_url=f"unix://{dockerd.socket}")
    host_config = client.api.inspect_container(service.container_name)["HostConfig"]
    client.close()
    assert host_config["Memory"] == 64 << 20
    assert host_config["NanoCpus"] == 500_000_000
