"""One sandbox cluster for the whole e2e session: building it costs minutes under emulation.

Two machines with Docker, where the services run, and machine-c without Docker: the third
member, whose join moves the NATS control plane onto three replicated JetStream servers, so
that every deploy, migration and drain of the session runs on them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ployz.sandbox.cluster import Cluster
from tests.e2e.sandbox_operator import remove_services


@pytest.fixture(scope="session")
def cluster(in_vm: None) -> Iterator[Cluster]:
    built = Cluster(2)
    try:
        built.start()
        built.join(built.prepare_machine(docker=False))
        yield built
    finally:
        built.stop()


@pytest.fixture(autouse=True, scope="module")
def services_removed_after_the_module(cluster: Cluster) -> Iterator[None]:
    """A module's services share the cluster with the next module's tests but not their CPU."""
    yield
    remove_services(cluster)
