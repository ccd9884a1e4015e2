"""Services' stable addresses and the machines' routing acknowledgements, on both backends:
an address is given once per service and kept, two services never share one, a removed
service's address is freed; acknowledgements merge per namespace and wake their watch."""

from __future__ import annotations

import base64

import pytest

from ployz.control import (
    AddressesExhausted,
    ControlPlane,
    NoCluster,
    PutService,
    RemoveService,
    Service,
    deploy_lock_name,
)
from ployz.control.models import next_service_address

TRUST = "ed25519:" + base64.b64encode(bytes(32)).decode()


@pytest.fixture
def cluster(cp: ControlPlane, machines: tuple[str, ...]) -> ControlPlane:
    cp.create_cluster("test", [TRUST])
    return cp


def commit(cp: ControlPlane, namespace: str, *changes) -> int:
    lease = cp.acquire(deploy_lock_name(namespace), "test", 60)
    try:
        return cp.commit(namespace, lease.token, list(changes)).seq
    finally:
        cp.release(deploy_lock_name(namespace), lease.token)


def test_a_service_keeps_its_address_and_no_two_share_one(cluster: ControlPlane) -> None:
    web = cluster.service_address("shop", "web")
    assert web == "10.212.0.2"  # .1 is every machine's service bridge
    assert cluster.service_address("shop", "web") == web
    assert cluster.service_address("blog", "web") == "10.212.0.3"
    assert cluster.get_cluster().service_addresses == {"shop/web": web,
                                                       "blog/web": "10.212.0.3"}


def test_a_removed_service_frees_its_address(cluster: ControlPlane) -> None:
    address = cluster.service_address("shop", "web")
    service = Service(namespace="shop", name="web", image="img", machine="machine-a",
                      address=address)
    commit(cluster, "shop", PutService(service=service))
    commit(cluster, "shop", RemoveService(name="web"))
    assert "shop/web" not in cluster.get_cluster().service_addresses
    assert cluster.service_address("shop", "api") == address


def test_a_full_range_and_a_missing_cluster_are_typed_errors(cp: ControlPlane,
                                                             machines: tuple[str, ...]) -> None:
    with pytest.raises(NoCluster):
        cp.service_address("shop", "web")
    cp.create_cluster("test", [TRUST])
    info = cp.get_cluster()
    assert info.services == "10.212.0.0/16"
    small = info.model_copy(update={"services": "10.212.0.0/30"})
    # A /30 holds two hosts: the bridges' gateway and one service.
    assert next_service_address(small) == "10.212.0.2"
    full = small.model_copy(update={"service_addresses": {"a/b": "10.212.0.2"}})
    with pytest.raises(AddressesExhausted) as exhausted:
        next_service_address(full)
    assert "no free service address left in 10.212.0.0/30" in str(exhausted.value)


def test_acknowledgements_merge_by_namespace_and_wake_their_watch(
        cluster: ControlPlane) -> None:
    watch = cluster.watch_route_acks()
    try:
        cluster.acknowledge_routes("machine-a", {"shop": 3})
        assert watch.wait(10)
        cluster.acknowledge_routes("machine-a", {"blog": 1})
        cluster.acknowledge_routes("machine-b", {"shop": 2})
        acks = cluster.route_acks()
        assert acks["machine-a"].namespaces == {"shop": 3, "blog": 1}
        assert acks["machine-b"].namespaces == {"shop": 2}
        revision = acks["machine-a"].updated
        watch.wait(0)  # drain
        cluster.acknowledge_routes("machine-a", {"shop": 3})  # nothing new: nothing written
        assert cluster.route_acks()["machine-a"].updated == revision
    finally:
        watch.close()


def test_a_routing_watch_wakes_at_a_commit(cluster: ControlPlane) -> None:
    lease = cluster.acquire(deploy_lock_name("shop"), "test", 60)
    watch = cluster.watch_routing()
    try:
        cluster.commit("shop", lease.token, [PutService(service=Service(
            namespace="shop", name="web", image="img", machine="machine-a"))])
        assert watch.wait(10)
    finally:
        watch.close()
