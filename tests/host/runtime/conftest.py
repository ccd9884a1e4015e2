"""A DockerRuntime on the session's private Docker daemon, and a namespace of the test's own
whose containers are removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ployz.runtime.docker_runtime import DockerRuntime
from ployz.runtime.model import service_labels


@pytest.fixture
def runtime(dockerd) -> Iterator[DockerRuntime]:
    runtime = DockerRuntime(dockerd.socket)
    yield runtime
    runtime.close()


@pytest.fixture
def namespace(runtime: DockerRuntime) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    for info in runtime.list(service_labels(name)):
        runtime.remove(info.name, force=True)
