"""One sandbox cluster for the whole e2e session: building it costs minutes under emulation.

Two machines, on the first one's single JetStream server. The routing and membership modules run
last: they need a third machine, whose join moves the control plane onto three replicated
servers, for good (a machine running one is not removed), and those servers' Raft traffic would
slow every later module under emulation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ployz.sandbox.cluster import ROOT, Cluster, Machine
from tests.e2e.ployzctl_starter import Starter
from tests.e2e.sandbox_operator import remove_services, use_starter

LAST_MODULES = ("test_routing.py", "test_cluster_membership.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules with a third machine after every other, in this order (see above); the
    others keep their order."""
    items.sort(key=lambda item: (LAST_MODULES.index(item.path.name) + 1
                                 if item.path.name in LAST_MODULES else 0))


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


@pytest.fixture(scope="session")
def machine_c(cluster: Cluster) -> Machine:
    """A third machine, joined with a token from ``machine invite``: its join moves the control
    plane onto three replicated servers. It has no Docker (a member need not run services; a
    drain passes it by), which saves its daemons' start under emulation. It stays: it runs one
    of the servers."""
    machine = cluster.prepare_machine(docker=False)
    cluster.join(machine)
    return machine


@pytest.fixture(autouse=True, scope="module")
def services_removed_after_the_module(cluster: Cluster) -> Iterator[None]:
    """A module's services share the cluster with the next module's tests but not their CPU."""
    yield
    remove_services(cluster)
