"""One sandbox cluster for the whole e2e session: building it costs minutes under emulation.

Two machines, on the first one's single JetStream server. The membership module runs last: its
third machine moves the control plane onto three replicated servers, for good (a machine running
one is not removed), and those servers' Raft traffic would slow every later module under
emulation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ployz.sandbox.cluster import ROOT, Cluster
from tests.e2e.ployzctl_starter import Starter
from tests.e2e.sandbox_operator import remove_services, use_starter

LAST_MODULE = "test_cluster_membership.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The membership module after every other (see above); the others keep their order."""
    items.sort(key=lambda item: item.path.name == LAST_MODULE)


@pytest.fixture(scope="session")
def cluster(in_vm: None) -> Iterator[Cluster]:
    built = Cluster(2)
    starter = None
    try:
        built.start()
        # In the operator's namespace (machine-a's), which the build entered.
        starter = Starter(ROOT / "ployzctl-starter.sock", ROOT / "ployzctl-starter.log")
        use_starter(starter)
        yield built
    finally:
        if starter is not None:
            starter.close()
        built.stop()


@pytest.fixture(autouse=True, scope="module")
def services_removed_after_the_module(cluster: Cluster) -> Iterator[None]:
    """A module's services share the cluster with the next module's tests but not their CPU."""
    yield
    remove_services(cluster)
