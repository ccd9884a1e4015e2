"""How a cluster hands out overlay IPs and container subnets, and what a cluster document may hold
(pure, no storage)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from pydantic import ValidationError

from ployz.control import AddressesExhausted, Allocation, ClusterInfo, Invite
from ployz.control.models import next_allocation, utcnow

OPERATOR = "ed25519:" + base64.b64encode(bytes(32)).decode()


def wireguard_key(index: int) -> str:
    return base64.b64encode(bytes([index]) * 32).decode()


def cluster(**fields) -> ClusterInfo:
    return ClusterInfo(name="prod", trust=(OPERATOR,), **fields)


def join(info: ClusterInfo, machine_id: str) -> ClusterInfo:
    allocation = next_allocation(info, wireguard_key(len(info.allocations) + 1))
    return info.model_copy(update={"allocations": {**info.allocations, machine_id: allocation}})


def test_machines_get_the_lowest_free_addresses_in_order() -> None:
    info = cluster()
    for machine_id in ("a", "b", "c"):
        info = join(info, machine_id)
    assert {m: (a.overlay_ip, a.subnet) for m, a in info.allocations.items()} == {
        "a": ("10.210.0.1", "10.211.1.0/24"),
        "b": ("10.210.0.2", "10.211.2.0/24"),
        "c": ("10.210.0.3", "10.211.3.0/24"),
    }
    assert info.allocations["a"].wireguard_key == wireguard_key(1)
    ClusterInfo.model_validate(info.model_dump())  # what the allocator made is a valid document


def test_a_freed_address_is_handed_out_again_first() -> None:
    info = join(join(join(cluster(), "a"), "b"), "c")
    info = info.model_copy(
        update={"allocations": {k: v for k, v in info.allocations.items() if k != "b"}}
    )
    again = next_allocation(info, wireguard_key(9))
    assert (again.overlay_ip, again.subnet) == ("10.210.0.2", "10.211.2.0/24")


def test_other_ranges_and_prefixes() -> None:
    info = cluster(overlay="172.30.0.0/24", subnets="172.31.0.0/16", subnet_prefix=20)
    first = next_allocation(info, wireguard_key(1))
    assert (first.overlay_ip, first.subnet) == ("172.30.0.1", "172.31.16.0/20")


def test_a_full_overlay_is_refused_naming_it() -> None:
    info = join(join(cluster(overlay="10.210.0.0/30"), "a"), "b")  # hosts .1 and .2 only
    with pytest.raises(
        AddressesExhausted,
        match=r"cluster 'prod' has no free overlay address "
        r"left in 10\.210\.0\.0/30 \(2 allocated\)",
    ):
        next_allocation(info, wireguard_key(3))


def test_full_subnets_are_refused_naming_them() -> None:
    info = cluster(subnets="10.211.0.0/22")  # 10.211.0.0/24 is skipped: three left
    for machine_id in ("a", "b", "c"):
        info = join(info, machine_id)
    assert info.allocations["c"].subnet == "10.211.3.0/24"
    with pytest.raises(AddressesExhausted, match=r"no free /24 subnet left in 10\.211\.0\.0/22"):
        next_allocation(info, wireguard_key(4))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"overlay": "10.211.0.0/16"}, "the overlay 10.211.0.0/16 overlaps the subnets"),
        ({"subnets": "10.210.128.0/17"}, "overlaps"),
        ({"subnet_prefix": 16}, "subnet_prefix /16 must be longer than the subnets' /16"),
        ({"subnet_prefix": 31}, "less than or equal to 30"),
        ({"overlay": "fd00::/64"}, "is not an IPv4 network"),
        ({"overlay": "10.210.0.1/16"}, "is not an IPv4 network"),
        ({"overlay": "10.210.0.0/31"}, "too small"),
        ({"trust": ()}, "at least 1 item"),
        ({"trust": ("ssh-ed25519 AAAA",)}, "an operator public key is ed25519:BASE64"),
        ({"trust": ("ed25519:" + base64.b64encode(bytes(16)).decode(),)}, "of 32 bytes"),
        ({"name": "my cluster"}, "String should match pattern"),
    ],
)
def test_malformed_clusters_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ClusterInfo.model_validate({"name": "prod", "trust": (OPERATOR,), **fields})


@pytest.mark.parametrize(
    ("allocations", "message"),
    [
        ({"a": ("10.212.0.1", "10.211.1.0/24")}, "overlay IP 10.212.0.1 is no host of"),
        ({"a": ("10.210.255.255", "10.211.1.0/24")}, "is no host of 10.210.0.0/16"),
        ({"a": ("10.210.0.1", "10.212.1.0/24")}, "subnet 10.212.1.0/24 is not within"),
        ({"a": ("10.210.0.1", "10.211.0.0/23")}, "is not a /24"),
        (
            {"a": ("10.210.0.1", "10.211.1.0/24"), "b": ("10.210.0.1", "10.211.2.0/24")},
            "machines a and b both hold 10.210.0.1",
        ),
        (
            {"a": ("10.210.0.1", "10.211.1.0/24"), "b": ("10.210.0.2", "10.211.1.0/24")},
            "machines a and b both hold 10.211.1.0/24",
        ),
    ],
)
def test_a_damaged_cluster_document_is_refused(allocations: dict, message: str) -> None:
    stored = {m: {"overlay_ip": ip, "subnet": net} for m, (ip, net) in allocations.items()}
    with pytest.raises(ValidationError, match=message):
        ClusterInfo.model_validate({"name": "prod", "trust": (OPERATOR,), "allocations": stored})


def test_allocation_fields_are_checked() -> None:
    with pytest.raises(ValidationError, match="overlay_ip"):
        Allocation(overlay_ip="10.210.0.300", subnet="10.211.1.0/24")
    with pytest.raises(ValidationError, match="WireGuard public key is 32 bytes"):
        Allocation(overlay_ip="10.210.0.1", subnet="10.211.1.0/24", wireguard_key="short")


def test_invites_are_checked() -> None:
    now = utcnow()
    later = now + timedelta(hours=1)
    Invite(id="0" * 32, created=now, expires=later)
    with pytest.raises(ValidationError, match="String should match pattern"):
        Invite(id="A" * 32, created=now, expires=later)
    with pytest.raises(ValidationError, match="expires before it is created"):
        Invite(id="0" * 32, created=now, expires=now)
    with pytest.raises(ValidationError, match="used_by and used_at go together"):
        Invite(id="0" * 32, created=now, expires=later, used_by="machine-a")
