"""Lease contract, on both backends: fencing tokens, expiry, renewal, release, contention."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ployz.control import (
    ControlPlane,
    InvalidArgument,
    InvalidName,
    LockHeld,
    Machine,
    PutService,
    Service,
    StaleFencingToken,
    deploy_lock_name,
    open_control_plane,
)

WORKER = Path(__file__).with_name("control_worker.py")
SHORT_TTL_S = 1.0


@pytest.mark.parametrize("name", [deploy_lock_name("shop"), "drain/machine-a"])
def test_acquire_gives_a_token_and_blocks_other_holders(cp: ControlPlane, name: str) -> None:
    lease = cp.acquire(name, "deploy-1", ttl=60)
    assert (lease.name, lease.holder, lease.token) == (name, "deploy-1", 1)
    with pytest.raises(LockHeld) as held:
        cp.acquire(name, "deploy-2", ttl=60)
    assert held.value.holder == "deploy-1"
    assert held.value.expires_at == lease.expires_at
    assert "deploy-1" in str(held.value)
    assert cp.get_lease(name) == lease


def test_token_grows_after_expiry_and_old_token_is_stale(cp: ControlPlane) -> None:
    name = deploy_lock_name("shop")
    first = cp.acquire(name, "deploy-1", ttl=SHORT_TTL_S)
    time.sleep(SHORT_TTL_S + 0.1)
    second = cp.acquire(name, "deploy-2", ttl=60)
    assert second.token == first.token + 1
    with pytest.raises(StaleFencingToken, match="held by 'deploy-2'"):
        cp.renew(name, first.token, ttl=60)
    with pytest.raises(StaleFencingToken):
        cp.release(name, first.token)
    assert cp.get_lease(name) == second


def test_expired_lease_cannot_be_renewed(cp: ControlPlane) -> None:
    name = deploy_lock_name("shop")
    lease = cp.acquire(name, "deploy-1", ttl=SHORT_TTL_S)
    time.sleep(SHORT_TTL_S + 0.1)
    with pytest.raises(StaleFencingToken, match="expired"):
        cp.renew(name, lease.token, ttl=60)


def test_renew_extends_and_keeps_the_token(cp: ControlPlane) -> None:
    name = deploy_lock_name("shop")
    lease = cp.acquire(name, "deploy-1", ttl=SHORT_TTL_S)
    renewed = cp.renew(name, lease.token, ttl=60)
    assert renewed.token == lease.token
    assert renewed.expires_at > lease.expires_at
    time.sleep(SHORT_TTL_S + 0.1)
    with pytest.raises(LockHeld):
        cp.acquire(name, "deploy-2", ttl=60)


def test_release_frees_the_lock_and_the_next_token_is_higher(cp: ControlPlane) -> None:
    name = deploy_lock_name("shop")
    lease = cp.acquire(name, "deploy-1", ttl=60)
    released = cp.release(name, lease.token)
    assert released.released
    assert cp.release(name, lease.token) == released  # releasing twice changes nothing
    after = cp.acquire(name, "deploy-2", ttl=60)
    assert after.token == lease.token + 1


def test_same_holder_retakes_its_lock_with_a_new_token(cp: ControlPlane) -> None:
    """An interrupted deploy re-run under the same holder id does not wait out the TTL."""
    name = deploy_lock_name("shop")
    first = cp.acquire(name, "deploy-1", ttl=60)
    again = cp.acquire(name, "deploy-1", ttl=60)
    assert again.token == first.token + 1
    with pytest.raises(StaleFencingToken):
        cp.renew(name, first.token, ttl=60)


def test_locks_of_different_namespaces_are_independent(cp: ControlPlane) -> None:
    a = cp.acquire(deploy_lock_name("shop"), "deploy-1", ttl=60)
    b = cp.acquire(deploy_lock_name("blog"), "deploy-2", ttl=60)
    assert (a.token, b.token) == (1, 1)


@pytest.mark.parametrize("name", ["", "deploy/", "a b", "deploy/x.y", "x/*"])
def test_malformed_lock_name_is_refused(cp: ControlPlane, name: str) -> None:
    with pytest.raises(InvalidName):
        cp.acquire(name, "deploy-1", ttl=60)


@pytest.mark.parametrize("ttl", [0, -1.0])
def test_non_positive_ttl_is_refused(cp: ControlPlane, ttl: float) -> None:
    with pytest.raises(InvalidArgument):
        cp.acquire(deploy_lock_name("shop"), "deploy-1", ttl=ttl)
    assert cp.get_lease(deploy_lock_name("shop")) is None


def test_threads_racing_for_a_lock_have_exactly_one_winner(control_url: str) -> None:
    contenders = 8
    planes = [open_control_plane(control_url) for _ in range(contenders)]
    start = threading.Barrier(contenders)
    tokens: list[int] = []
    refused: list[str] = []

    def contend(index: int) -> None:
        start.wait()
        try:
            tokens.append(planes[index].acquire(deploy_lock_name("shop"), f"t{index}", 60).token)
        except LockHeld as held:
            refused.append(held.holder)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert tokens == [1]
        winner = planes[0].get_lease(deploy_lock_name("shop"))
        assert winner is not None
        assert refused == [winner.holder] * (contenders - 1)
    finally:
        for plane in planes:
            plane.close()


def test_processes_racing_for_a_lock_have_exactly_one_winner(
    control_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    lock = deploy_lock_name("shop")
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "acquire", control_url, lock, f"p{i}", str(gate)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    for worker in workers:  # every worker connected and waits at the gate
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n"
    gate.touch()
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        results.append(json.loads(out))
    winners = [r for r in results if "token" in r]
    assert len(winners) == 1
    assert winners[0]["token"] == 1
    assert all(r["held_by"] == winners[0]["holder"] for r in results if "held_by" in r)


def test_fencing_holds_under_contention(control_url: str) -> None:
    """Holders race for a short lock, commit with their token, and sometimes stall past the TTL
    before committing again. The commit log's tokens never go back: no stale holder's commit
    landed after a newer holder's."""
    lock, ttl = deploy_lock_name("shop"), 0.3
    with open_control_plane(control_url) as setup:
        setup.register_machine(Machine(id="machine-a", overlay_ip="10.0.0.1", subnet="10.0.0.0/24"))
    stale_refusals: list[int] = []

    def holder(index: int) -> None:
        rng = random.Random(index)
        with open_control_plane(control_url) as cp:
            for round_ in range(6):
                try:
                    lease = cp.acquire(lock, f"h{index}", ttl=ttl)
                except LockHeld:
                    time.sleep(rng.uniform(0, ttl))
                    continue
                for step in range(3):
                    if round_ % 2 == 0 and step == 1:
                        time.sleep(ttl * 1.5)  # stall: the lease expires, may be taken
                    service = Service(
                        namespace="shop",
                        name=f"s{index}-{round_}-{step}",
                        image="busybox",
                        machine="machine-a",
                    )
                    try:
                        cp.commit("shop", lease.token, [PutService(service=service)])
                    except StaleFencingToken:
                        stale_refusals.append(lease.token)
                        break

    threads = [threading.Thread(target=holder, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with open_control_plane(control_url) as cp:
        tokens = [commit.fencing_token for commit in cp.list_commits("shop")]
    assert tokens, "no holder ever committed"
    assert tokens == sorted(tokens)
    # Whoever won the first round stalled past its TTL and was refused afterwards.
    assert stale_refusals
