"""The overlay reconcile: the machine facts to the wanted peers, applied to a fake peer table the
way the kernel's would be, and the keeper's loop (changes, resyncs, failures, stop)."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable

import pytest

from ployz.agent.overlay import (
    OverlayKeeper,
    PeerFact,
    RoutingFacts,
    ServiceFact,
    reconcile,
    resolve_endpoint,
    wanted_peers,
)
from ployz.net.peers import Endpoint, Peer, PeerConfig

KEYS = {name: base64.b64encode(name.encode() * 32).decode() for name in "abcd"}


def fact(name: str, host: int, *, key: bool = True, endpoint: bool = True) -> PeerFact:
    return PeerFact(machine_id=f"machine-{name}", overlay_ip=f"10.212.0.{host}",
                    subnet=f"10.213.{host}.0/24", wireguard_key=KEYS[name] if key else None,
                    endpoint=f"10.98.0.{host}:51820" if endpoint else None)


CLUSTER = [fact("a", 1), fact("b", 2), fact("c", 3)]


class FakeLink:
    """Holds peers as the kernel does: set replaces a peer's settings, remove forgets it."""

    def __init__(self, peers: Iterable[PeerConfig] = ()) -> None:
        self.table: dict[str, Peer] = {}
        self.calls: list[str] = []
        self.closed = False
        for peer in peers:
            self._store(peer)

    def peers(self) -> list[Peer]:
        return sorted(self.table.values(), key=lambda p: p.public_key)

    def set_peer(self, peer: PeerConfig) -> None:
        self.calls.append(f"set {self._name(peer.public_key)}")
        self._store(peer)

    def remove_peer(self, public_key: str) -> None:
        self.calls.append(f"remove {self._name(public_key)}")
        self.table.pop(public_key, None)

    def close(self) -> None:
        self.closed = True

    @staticmethod
    def _name(public_key: str) -> str:
        return base64.b64decode(public_key)[:1].decode()

    def _store(self, peer: PeerConfig) -> None:
        old = self.table.get(peer.public_key)
        endpoint = peer.endpoint or (old.endpoint if old else None)
        self.table[peer.public_key] = Peer(peer.public_key, endpoint, peer.allowed_ips,
                                           peer.persistent_keepalive_s, None, 0, 0)


def test_every_other_machine_with_a_key_and_an_endpoint_is_a_peer():
    facts = [*CLUSTER, fact("d", 4, key=False), fact("d", 5, endpoint=False)]
    wanted = wanted_peers("machine-a", facts)
    assert sorted(wanted) == ["machine-b", "machine-c"]
    assert wanted["machine-b"] == PeerConfig(KEYS["b"], Endpoint("10.98.0.2", 51820),
                                             ("10.212.0.2/32", "10.213.2.0/24"))


def test_a_machine_without_its_own_fact_wants_no_peer():
    assert wanted_peers("machine-z", CLUSTER) == {}


def test_ipv6_overlay_addresses_are_host_routes():
    v6 = PeerFact("machine-b", "fd10::2", "fd11:2::/64", KEYS["b"], "[fd00::2]:51820")
    wanted = wanted_peers("machine-a", [fact("a", 1), v6])
    assert wanted["machine-b"].allowed_ips == ("fd10::2/128", "fd11:2::/64")
    assert wanted["machine-b"].endpoint == Endpoint("fd00::2", 51820)


def test_an_unresolvable_host_name_leaves_the_endpoint_out():
    named = PeerFact("machine-b", "10.212.0.2", "10.213.2.0/24", KEYS["b"], "b.invalid:51820")
    wanted = wanted_peers("machine-a", [fact("a", 1), named], resolve=lambda _: None)
    assert wanted["machine-b"].endpoint is None
    assert resolve_endpoint("10.98.0.2:51820") == Endpoint("10.98.0.2", 51820)


def test_reconcile_converges_and_then_changes_nothing(caplog: pytest.LogCaptureFixture):
    link = FakeLink()
    with caplog.at_level(logging.INFO, "ployz.agent.overlay"):
        first = reconcile(link, "machine-a", CLUSTER)
    assert {p.public_key for p in first.added} == {KEYS["b"], KEYS["c"]}
    assert sorted(link.calls) == ["set b", "set c"]
    assert "overlay peer machine-b added" in caplog.text
    link.calls.clear()
    assert not reconcile(link, "machine-a", CLUSTER)
    assert link.calls == []


def test_changed_removed_and_stray_peers_are_fixed(caplog: pytest.LogCaptureFixture):
    moved_b = PeerFact("machine-b", "10.212.0.2", "10.213.2.0/24", KEYS["b"], "10.98.0.22:51820")
    stray = PeerConfig(KEYS["d"], Endpoint("10.98.0.4", 51820), ("10.212.0.4/32",))
    link = FakeLink([*wanted_peers("machine-a", CLUSTER).values(), stray])
    with caplog.at_level(logging.INFO, "ployz.agent.overlay"):
        changes = reconcile(link, "machine-a", [fact("a", 1), moved_b])
    assert [p.public_key for p in changes.updated] == [KEYS["b"]]
    assert set(changes.removed) == {KEYS["c"], KEYS["d"]}
    assert link.table[KEYS["b"]].endpoint == Endpoint("10.98.0.22", 51820)
    assert set(link.table) == {KEYS["b"]}
    assert "overlay peer machine-b updated" in caplog.text
    assert f"overlay peer {KEYS['d']} removed" in caplog.text


def test_a_machine_removed_from_the_cluster_drops_every_peer(caplog: pytest.LogCaptureFixture):
    link = FakeLink(list(wanted_peers("machine-a", CLUSTER).values()))
    with caplog.at_level(logging.INFO, "ployz.agent.overlay"):
        changes = reconcile(link, "machine-a", CLUSTER[1:])
    assert set(changes.removed) == {KEYS["b"], KEYS["c"]} and link.table == {}
    assert "machine-a has no fact in the control plane" in caplog.text


class FakeFacts:
    """Machine and service facts that change when told to, and that can be made to fail; the
    acknowledgements they were given."""

    def __init__(self, machines: list[PeerFact]) -> None:
        self.machines_now = machines
        self.services_now: list[ServiceFact] = []
        self.versions_now: dict[str, int] = {}
        self.acknowledged: list[dict[str, int]] = []
        self.changed = threading.Event()
        self.failing = False
        self.opened = 0
        self.closed = 0

    def open(self) -> FakeFacts:
        self.opened += 1
        if self.failing:
            raise ConnectionError("control plane down")
        return self

    def read(self) -> RoutingFacts:
        if self.failing:
            raise ConnectionError("control plane down")
        return RoutingFacts(list(self.machines_now), list(self.services_now),
                            dict(self.versions_now))

    def acknowledge(self, versions: dict[str, int]) -> None:
        self.acknowledged.append(versions)

    def wait(self, timeout_s: float) -> bool:
        if self.changed.wait(timeout_s):
            self.changed.clear()
            return True
        return False

    def close(self) -> None:
        self.closed += 1


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_keeper_follows_changes_survives_failures_and_stops_promptly():
    link, facts = FakeLink(), FakeFacts(CLUSTER)
    keeper = OverlayKeeper("machine-a", lambda: link, facts.open, resync_s=0.2)
    keeper.start()
    try:
        eventually(lambda: set(link.table) == {KEYS["b"], KEYS["c"]})
        facts.machines_now = [*CLUSTER, fact("d", 4)]
        facts.changed.set()
        eventually(lambda: KEYS["d"] in link.table)
        facts.failing = True
        eventually(lambda: facts.closed >= 1 and link.closed)
        facts.failing = False
        facts.machines_now = CLUSTER[:2]
        eventually(lambda: set(link.table) == {KEYS["b"]})
        assert facts.opened >= 2
    finally:
        started = time.monotonic()
        keeper.stop()
    assert time.monotonic() - started < 1.0


def test_a_service_address_is_allowed_to_the_peer_it_is_routed_to():
    services = [ServiceFact("shop", "web", "10.214.0.5", "machine-b"),
                ServiceFact("shop", "db", "10.214.0.6", "machine-a")]
    wanted = wanted_peers("machine-a", CLUSTER, services=services)
    assert wanted["machine-b"].allowed_ips == ("10.212.0.2/32", "10.213.2.0/24",
                                               "10.214.0.5/32")
    assert wanted["machine-c"].allowed_ips == ("10.212.0.3/32", "10.213.3.0/24")
    # Its own services are not a peer's: the local bridge holds them.
    assert all("10.214.0.6/32" not in p.allowed_ips for p in wanted.values())


class FakeRouting:
    """Local routing that records what it was given, and can be made to fail."""

    def __init__(self) -> None:
        self.applied: list[list[ServiceFact]] = []
        self.failing = False

    def apply(self, machine_id: str, services: list[ServiceFact]) -> list[str]:
        if self.failing:
            raise OSError("gateway away")
        self.applied.append(services)
        return [f"{len(services)} services"]

    def close(self) -> None:
        pass


def test_the_keeper_acknowledges_a_commit_only_once_all_of_its_routing_is_applied():
    link, facts, routing = FakeLink(), FakeFacts(CLUSTER), FakeRouting()
    facts.versions_now = {"shop": 6}
    moved = ServiceFact("shop", "web", "10.214.0.5", "machine-c")
    keeper = OverlayKeeper("machine-a", lambda: link, facts.open, resync_s=0.2,
                           open_routing=lambda: routing)
    keeper.start()
    try:
        eventually(lambda: facts.acknowledged == [{"shop": 6}])
        routing.failing = True
        facts.services_now, facts.versions_now = [moved], {"shop": 7}
        facts.changed.set()
        # The peers follow, but a pass whose routing failed acknowledges nothing.
        eventually(lambda: "10.214.0.5/32" in link.table[KEYS["c"]].allowed_ips)
        time.sleep(0.5)
        assert facts.acknowledged == [{"shop": 6}]
        routing.failing = False
        eventually(lambda: facts.acknowledged[-1:] == [{"shop": 7}])
        assert routing.applied[-1] == [moved]
    finally:
        keeper.stop()
