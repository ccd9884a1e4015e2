"""Services' stable addresses, the machines' routing acknowledgements and the measurements
migrations are estimated from, on both backends: an address is given once per service and
kept, two services never share one, a removed service's address is freed; acknowledgements
merge per namespace and wake their watch; sends fold into a link's rate."""

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
from ployz.control.models import CutoverCosts, next_service_address

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


def test_sends_fold_into_the_links_rate_and_fixed_cost(cluster: ControlPlane) -> None:
    assert cluster.link_rate("machine-a", "machine-b") is None
    small = cluster.record_send("machine-a", "machine-b", 4096, 0.8)
    assert (small.bytes_per_s, small.fixed_s, small.sends) == (None, 0.8, 1)
    large = cluster.record_send("machine-a", "machine-b", 100 << 20, 10.8)
    # two sizes: the line through both, 0.8 s of set-up and 10 s for the rest
    assert large.bytes_per_s == pytest.approx(((100 << 20) - 4096) / 10.0)
    assert large.fixed_s == pytest.approx(0.8, abs=1e-3) and large.sends == 2
    again = cluster.record_send("machine-a", "machine-b", (100 << 20) // 2, 5.8)  # on it
    assert again.bytes_per_s == pytest.approx(((100 << 20) - 4096) / 10.0, rel=0.01)
    assert cluster.link_rate("machine-a", "machine-b") == again  # the fit is stored whole
    assert cluster.link_rate("machine-b", "machine-a") is None


def test_cutover_costs_are_kept_per_service_and_for_the_cluster_as_a_running_mean(
        cluster: ControlPlane) -> None:
    """Each migration's costs weigh half of what is stored after it: one slow stop moves the
    next estimate half way, not all the way."""
    first = CutoverCosts(namespace="shop", service="web", stop_s=1, start_s=2, ready_s=3,
                         overhead_s=10)
    cluster.record_cutover(first)
    second = first.model_copy(update={"service": "db", "stop_s": 4.0})
    cluster.record_cutover(second)
    assert cluster.cutover_costs("shop", "web") == first
    assert cluster.cutover_costs("shop", "db") == second  # db's first
    latest = cluster.latest_cutover_costs()
    assert latest is not None and (latest.service, latest.stop_s) == ("db", 2.5)
    assert (latest.start_s, latest.ready_s, latest.overhead_s) == (2, 3, 10)
    again = cluster.record_cutover(first.model_copy(update={"stop_s": 3.0}))
    assert again.stop_s == 2.0 and cluster.cutover_costs("shop", "web") == again
    assert cluster.cutover_costs("shop", "api") is None
