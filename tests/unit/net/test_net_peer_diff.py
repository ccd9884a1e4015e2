"""diff_peers: what the kernel holds against what is wanted, normalised so that an unchanged peer
is never touched."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from ployz.net.peers import KEEPALIVE_S, Endpoint, Peer, PeerChanges, PeerConfig, diff_peers

KEY_A, KEY_B, KEY_C = (base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2, 3))


def wanted(key: str, ip: str = "10.98.0.2", *allowed: str) -> PeerConfig:
    return PeerConfig(key, Endpoint(ip, 51820), allowed or ("10.212.0.2/32", "10.213.2.0/24"))


def held(config: PeerConfig, **changed: object) -> Peer:
    """The kernel's view of ``config`` (after a handshake), with ``changed`` fields."""
    fields: dict[str, object] = {
        "public_key": config.public_key,
        "endpoint": config.endpoint,
        "allowed_ips": config.allowed_ips,
        "persistent_keepalive_s": config.persistent_keepalive_s,
        "latest_handshake": datetime(2026, 12, 1, tzinfo=UTC),
        "rx_bytes": 1234,
        "tx_bytes": 5678,
    }
    return Peer(**{**fields, **changed})  # type: ignore[arg-type]


def test_peers_as_wanted_need_no_change():
    peers = [wanted(KEY_A), wanted(KEY_B, "10.98.0.3", "10.212.0.3/32")]
    changes = diff_peers(peers, [held(p) for p in peers])
    assert changes == PeerChanges()
    assert not changes


def test_missing_peers_are_added_and_unwanted_removed_in_key_order():
    b, a = wanted(KEY_B), wanted(KEY_A)
    changes = diff_peers([b, a], [held(wanted(KEY_C))])
    assert changes.added == (a, b)
    assert changes.updated == ()
    assert changes.removed == (KEY_C,)


@pytest.mark.parametrize("change", [
    {"endpoint": Endpoint("10.98.0.9", 51820)},
    {"endpoint": Endpoint("10.98.0.2", 51821)},
    {"endpoint": None},
    {"allowed_ips": ("10.212.0.2/32",)},
    {"allowed_ips": ("10.212.0.2/32", "10.213.2.0/24", "10.214.0.0/16")},
    {"persistent_keepalive_s": 0},
])
def test_a_peer_that_differs_in_what_is_configured_is_updated(change: dict[str, object]):
    peer = wanted(KEY_A)
    changes = diff_peers([peer], [held(peer, **change)])
    assert changes == PeerChanges(updated=(peer,))


def test_traffic_and_handshakes_are_not_differences():
    peer = wanted(KEY_A)
    current = held(peer, latest_handshake=None, rx_bytes=0, tx_bytes=0)
    assert not diff_peers([peer], [current])


def test_an_unresolved_endpoint_leaves_the_kernels_endpoint_alone():
    peer = PeerConfig(KEY_A, None, ("10.212.0.2/32",))
    assert not diff_peers([peer], [held(peer, endpoint=Endpoint("192.0.2.7", 40000))])


def test_allowed_ips_compare_as_networks_not_as_text():
    peer = PeerConfig(KEY_A, Endpoint("10.98.0.2", 51820),
                      ("10.213.2.77/24", "10.212.0.2/32", "10.212.0.2/32"))
    assert peer.allowed_ips == ("10.212.0.2/32", "10.213.2.0/24")
    assert not diff_peers([peer], [held(peer, allowed_ips=("10.213.2.0/24", "10.212.0.2/32"))])


def test_ipv6_endpoints_compare_in_compressed_form():
    first = Endpoint("fd00:0:0::2", 51820)
    assert first == Endpoint("fd00::2", 51820)
    assert str(first) == "[fd00::2]:51820"
    assert str(Endpoint("10.98.0.2", 51820)) == "10.98.0.2:51820"


def test_every_peer_keeps_its_nat_mapping_open():
    assert wanted(KEY_A).persistent_keepalive_s == KEEPALIVE_S == 25


def test_public_keys_compare_in_their_canonical_spelling():
    spelled_otherwise = "B" * 43 + "="  # decodes to the same bytes as "B" * 42 + "A="
    peer = PeerConfig(spelled_otherwise, None, ("10.212.0.2/32",))
    assert peer.public_key == "B" * 42 + "A="
    assert not diff_peers([peer], [held(PeerConfig("B" * 42 + "A=", None, ("10.212.0.2/32",)))])


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        Endpoint("not-an-ip", 51820)
    with pytest.raises(ValueError, match="port"):
        Endpoint("10.98.0.2", 0)
    with pytest.raises(ValueError):
        PeerConfig(KEY_A, None, ("10.212.0.300/32",))
    with pytest.raises(ValueError, match="public key"):
        PeerConfig("c2hvcnQ=", None, ("10.212.0.2/32",))
