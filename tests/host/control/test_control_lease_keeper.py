"""LeaseKeeper, on both backends: a kept lease outlives its TTL; a stolen one is reported lost."""

from __future__ import annotations

import time

import pytest

from ployz.control import (
    ControlPlane,
    LeaseKeeper,
    LockHeld,
    StaleFencingToken,
    deploy_lock_name,
)

TTL_S = 1.5
LOCK = deploy_lock_name("shop")


def test_a_kept_lease_outlives_its_ttl(cp: ControlPlane) -> None:
    lease = cp.acquire(LOCK, "deploy-1", ttl=TTL_S)
    with LeaseKeeper(cp, lease, ttl=TTL_S) as keeper:
        time.sleep(2 * TTL_S)
        assert keeper.check().token == lease.token
        assert keeper.lease.expires_at > lease.expires_at
        with pytest.raises(LockHeld):
            cp.acquire(LOCK, "deploy-2", ttl=TTL_S)
    assert not keeper.lost.is_set()


def test_a_lease_taken_over_is_reported_lost(cp: ControlPlane) -> None:
    lease = cp.acquire(LOCK, "deploy-1", ttl=TTL_S)
    with LeaseKeeper(cp, lease, ttl=TTL_S) as keeper:
        cp.release(LOCK, lease.token)
        thief = cp.acquire(LOCK, "deploy-2", ttl=60)
        assert keeper.lost.wait(timeout=30)
        with pytest.raises(StaleFencingToken, match="deploy-2"):
            keeper.check()
    assert cp.get_lease(LOCK) == thief


def test_renewals_stop_with_the_block(cp: ControlPlane) -> None:
    lease = cp.acquire(LOCK, "deploy-1", ttl=TTL_S)
    with LeaseKeeper(cp, lease, ttl=TTL_S):
        pass
    time.sleep(TTL_S + 0.2)
    assert cp.acquire(LOCK, "deploy-2", ttl=60).token == lease.token + 1
