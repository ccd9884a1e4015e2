"""Service routes through the overlay interface, on the kernel's real routing table (netlink),
checked with ``ip route``: a pass adds and removes only its own routes and is idempotent."""

from __future__ import annotations

import subprocess

import pytest

from ployz.net.errors import NetlinkError
from ployz.net.routes import IP_FORWARD, ROUTE_PROTOCOL, ServiceRoutes, enable_forwarding

pytestmark = pytest.mark.host


def kernel_routes(name: str) -> list[str]:
    shown = subprocess.run(["ip", "-n", name, "route", "show", "proto", str(ROUTE_PROTOCOL)],
                           capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in shown.splitlines())


def test_a_pass_makes_the_routes_exactly_the_addresses_and_touches_nothing_else(inside_netns):
    name = inside_netns
    subprocess.run(["ip", "-n", name, "route", "add", "10.212.9.9/32", "dev", "ployz0"],
                   check=True)  # someone else's route, on the same interface
    routes = ServiceRoutes("ployz0")
    try:
        changes = routes.apply(["10.212.0.5", "10.212.0.6"])
        assert changes.added == ("10.212.0.5/32", "10.212.0.6/32") and not changes.removed
        assert kernel_routes(name) == ["10.212.0.5", "10.212.0.6"]
        assert not routes.apply(["10.212.0.6", "10.212.0.5"])  # nothing to change
        changes = routes.apply(["10.212.0.6", "10.212.0.7"])
        assert (changes.added, changes.removed) == (("10.212.0.7/32",), ("10.212.0.5/32",))
        assert kernel_routes(name) == ["10.212.0.6", "10.212.0.7"]
        got = subprocess.run(["ip", "-n", name, "route", "get", "10.212.0.7"],
                             capture_output=True, text=True, check=True).stdout
        assert "dev ployz0" in got
        routes.apply([])
        assert kernel_routes(name) == []
        all_routes = subprocess.run(["ip", "-n", name, "route"], capture_output=True,
                                    text=True, check=True).stdout
        assert "10.212.9.9 dev ployz0" in all_routes
    finally:
        routes.close()


def test_a_missing_interface_is_a_typed_error(inside_netns):
    routes = ServiceRoutes("nosuch0")
    try:
        with pytest.raises(NetlinkError) as failed:
            routes.apply(["10.212.0.5"])
        assert "nosuch0" in str(failed.value)
    finally:
        routes.close()


def test_forwarding_is_turned_on_once(inside_netns):
    IP_FORWARD.write_text("0\n")  # this thread's namespace's, not the host's
    assert enable_forwarding() is True
    assert enable_forwarding() is False
    seen = subprocess.run(["ip", "netns", "exec", inside_netns, "cat", str(IP_FORWARD)],
                          capture_output=True, text=True, check=True).stdout
    assert seen.strip() == "1"
