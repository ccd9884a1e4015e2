"""A NATS control plane that goes away: calls fail with a typed error, kept leases are lost."""

from __future__ import annotations

import pytest

from ployz.control import (
    ControlPlaneUnavailable,
    LeaseKeeper,
    StaleFencingToken,
    deploy_lock_name,
    open_control_plane,
)

TTL_S = 1.5


def test_outage_fails_calls_and_loses_kept_leases(private_nats_server) -> None:
    with open_control_plane(f"nats://{private_nats_server.url}?timeout=0.5") as cp:
        lease = cp.acquire(deploy_lock_name("shop"), "deploy-1", ttl=TTL_S)
        with LeaseKeeper(cp, lease, ttl=TTL_S) as keeper:
            private_nats_server.kill()
            assert keeper.lost.wait(timeout=30)
            with pytest.raises(StaleFencingToken, match="not renewed before it expired"):
                keeper.check()
        with pytest.raises(ControlPlaneUnavailable, match="did not answer"):
            cp.get_lease(deploy_lock_name("shop"))
