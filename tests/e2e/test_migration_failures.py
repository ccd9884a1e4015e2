"""``ployzctl migrate apply`` going wrong in the sandbox, each failure ending consistent: a data
connection cut mid-pre-copy resumes; the single JetStream server killed mid-pre-copy and
restarted is waited for; the target agent restarted mid-pre-copy is waited for and the send
resumed; a ployzctl killed at any phase boundary leaves a state that ``apply``
run again settles and goes on from; a target pool that fills up, or a target agent lost before
the commit, aborts with the service running on its source again, and ``apply`` run again, once
the cause is gone, completes; a service writing faster than the link is refused before the
fence. At every point the control plane names exactly one owner of the
volume: machine-a until the commit, machine-b after it. (The three replicated servers' failures
are in test_cluster_membership.py, whose third machine forms them.)"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.runtime.model import LABEL_DEPLOY
from ployz.sandbox.cluster import AGENT_PORT, Cluster, Machine
from tests.e2e.migration_run import (
    Apply,
    assert_moved,
    assert_still_on_source,
    dataset_exists,
    service,
)
from tests.e2e.sandbox_operator import remove_services
from tests.e2e.wireguard_view import peer_rows
from tests.e2e.writer_service import containers, deploy_writer

pytestmark = pytest.mark.timeout(1800)

KILL_CHAINS = [["pre-copy", "fence", "final-send", "start", "commit"], ["cleanup"]]
"""The phase boundaries a ``ployzctl`` is killed at: every one before the commit and the commit
itself in one chain of runs (each run settles the one before it); after the commit in another,
as a committed run leaves no later boundary to be killed at."""


@pytest.fixture(autouse=True)
def services_removed_after_each_test(cluster: Cluster) -> Iterator[None]:
    """Each test moves a writer of its own; none of them need run on after it."""
    yield
    remove_services(cluster)


def cut_data_connections(cluster: Cluster) -> str:
    """Destroys (``ss -K``, the peer gets a reset) machine-a's TCP connections to machine-b
    but the agent port's: the data connection of the send under way. Retries until one
    exists, since the sender connects only after the receiver is set up."""
    a, b = cluster.machines[:2]
    deadline = time.monotonic() + 30
    while True:
        killed = subprocess.run(
            ["ip", "netns", "exec", a.endpoint.netns, "ss", "-K", "-H", "-tn", "dst",
             b.overlay_ip, "dport", "!=", f":{AGENT_PORT}"],
            capture_output=True, text=True, check=True).stdout
        if killed.strip():
            return killed
        assert time.monotonic() < deadline, (
            "no data connection from machine-a to machine-b to cut within 30 s (or `ss -K` "
            "cannot destroy sockets on this kernel)")
        time.sleep(0.1)


def test_a_connection_cut_mid_pre_copy_resumes(cluster: Cluster, tmp_path: Path) -> None:
    # 128 MiB of incompressible fill: the full send lasts several seconds, time to cut it.
    deploy_writer(cluster, tmp_path, "cut", fill_mib=128)
    run = Apply(cluster, "cut")
    run.until_data_flows()
    cut = cut_data_connections(cluster)
    status, stderr = run.finish()
    assert status == 0, f"{stderr}\ncut: {cut}"
    (full,) = [e for e in run.of("transfer") if e["state"] == "done" and e["kind"] == "full"]
    assert full["resumes"] >= 1, f"the cut did not hit the full send: {cut}"
    assert run.of("aborting") == []
    assert_moved(cluster, "cut", run, run.before_fence)


@pytest.mark.parametrize("side", ["target", "source"])
def test_an_agent_restarted_mid_pre_copy_the_migration_completes(
        cluster: Cluster, tmp_path: Path, side: str) -> None:
    """The target's (machine-b) or the source's (machine-a) agent is SIGKILLed once a third of
    the full send has moved, and started again 2 s later: the send waits for it, the receiver
    (a new one after the target's restart, offering the resume token ZFS kept) takes the
    stream up again where it was, and less than a tenth of the volume travels twice. The
    service's container, which Docker runs, keeps running through the source's restart."""
    namespace = f"restart-{side}"
    restarted = cluster.machines[1 if side == "target" else 0]
    deploy_writer(cluster, tmp_path, namespace, fill_mib=128)
    run = Apply(cluster, namespace)
    for event in run:
        if (event.get("event"), event.get("kind")) == ("progress", "full") and (
                event["bytes"] >= 40 << 20):
            break
    else:
        pytest.fail("the full send never moved 40 MiB")
    cluster.stop_agent(restarted)
    time.sleep(2)
    cluster.start_agent(restarted)
    status, stderr = run.finish()
    assert status == 0, stderr
    transfers = run.of("transfer")
    (interrupted,) = [e for e in transfers if e["state"] == "interrupted"]
    assert interrupted["kind"] == "full"
    (full,) = [e for e in transfers if e["state"] == "done" and e["kind"] == "full"]
    assert full["resumed_bytes"] > 0, "the receive was not resumed"
    twice = (interrupted["sent_bytes"] or 0) - full["resumed_bytes"]
    print(f"{side}: sent before the restart: {interrupted['sent_bytes']}, resumed from "
          f"{full['resumed_bytes']}: {twice} bytes travelled twice")
    assert twice < (128 << 20) // 10
    assert run.of("aborting") == []
    assert_moved(cluster, namespace, run, run.before_fence)


def test_a_writer_faster_than_the_link_is_refused_before_the_fence(
        cluster: Cluster, tmp_path: Path) -> None:
    """Each of its lines rewrites 16 MiB: the deltas do not shrink, pre-copy cannot get the
    final send into a second, and the run stops before its fence, rolled back, the service
    never stopped, its facts as they were."""
    deploy_writer(cluster, tmp_path, "fast", fill_mib=4, churn_mib=16)
    before = service(cluster, "fast")
    (running,) = containers(cluster, cluster.machines[0], "fast")
    run = Apply(cluster, "fast", "--max-downtime", "1")
    status, stderr = run.finish()
    assert status == 1, stderr
    assert "pre-copy cannot converge to a downtime of 1 s" in stderr
    assert "the service writes" in stderr and "the link carries" in stderr
    assert [e["phase"] for e in run.of("phase")] == ["lock", "pre-copy"]
    assert service(cluster, "fast") == before
    (after,) = containers(cluster, cluster.machines[0], "fast")
    assert (after.name, after.state, after.started_at) == (running.name, "running",
                                                          running.started_at)
    assert containers(cluster, cluster.machines[1], "fast") == []
    assert not dataset_exists(cluster, cluster.machines[1], "fast")


def check_recovery(run: Apply, killed_at: str) -> None:
    """What a run after one killed at ``killed_at`` must do first: settle that run, rolling it
    back if it was killed before its commit, finishing its cleanup if after."""
    (recovered,) = run.of("recover")
    if killed_at == "cleanup":
        assert recovered["action"] == "cleanup"
        assert run.of("start") == []  # the committed run is finished, not run again
    elif killed_at != "commit":  # killed at the commit, it may have landed or not: both settle
        assert recovered["action"] == "roll-back"
    if recovered["action"] == "roll-back":
        (rolled_back,) = run.of("rolled-back")
        assert rolled_back["left"] == []


def test_the_control_server_killed_during_pre_copy_then_restarted_the_migration_completes(
        cluster: Cluster, tmp_path: Path) -> None:
    """The one JetStream server dies while data flows and comes back 3 s later, as its unit
    restarts it: the run's control-plane calls and its lock's renewals wait for it, and the
    migration commits once."""
    deploy_writer(cluster, tmp_path, "nats", fill_mib=64)
    run = Apply(cluster, "nats")
    run.until_data_flows()
    cluster.kill_control_server()
    time.sleep(3)
    cluster.start_control_server()
    status, stderr = run.finish()
    assert status == 0, stderr
    assert run.of("aborting") == [] and len(run.of("committed")) == 1
    assert_moved(cluster, "nats", run, run.before_fence)


@pytest.mark.parametrize("phases", KILL_CHAINS, ids=["-".join(c) for c in KILL_CHAINS])
def test_killed_at_each_phase_boundary_then_apply_again_completes(
        cluster: Cluster, tmp_path: Path, phases: list[str]) -> None:
    """Each run is killed at the next phase boundary of the chain, so that every run but the
    first also settles the one before it; the last run completes the move."""
    namespace = f"kill-{phases[0]}"
    deploy_writer(cluster, tmp_path, namespace, fill_mib=4)
    before_fence: list[int] | None = None
    previous: str | None = None
    for phase in phases:
        killed = Apply(cluster, namespace)
        for event in killed:
            if event == {"event": "phase", "phase": phase}:
                killed.process.kill()
                break
        assert killed.finish()[0] == -signal.SIGKILL, f"the run did not reach {phase}"
        if previous is not None:
            check_recovery(killed, previous)
        before_fence = killed.before_fence or before_fence
        # Whatever it got to, the volume has exactly one owner.
        owners = [v["owner"] for v in service(cluster, namespace)["volumes"]]
        assert owners in (["machine-a"], ["machine-b"])
        previous = phase

    again = Apply(cluster, namespace)
    status, stderr = again.finish()
    assert status == 0, stderr
    assert previous is not None
    check_recovery(again, previous)
    if again.of("rolled-back"):
        assert [e["phase"] for e in again.of("phase")][-2:] == ["commit", "cleanup"]
    assert_moved(cluster, namespace, again, again.before_fence or before_fence)


def fill_pool(hog: str) -> None:
    """Reserves all the free space of the pool ``hog`` is in for that empty dataset. The
    writers already moved to that pool keep writing, so the free space can shrink between
    reading and reserving it: then it is read again."""
    subprocess.run(["zfs", "create", hog], check=True, capture_output=True)
    for _ in range(10):
        free = subprocess.run(["zfs", "get", "-Hp", "-o", "value", "available", hog],
                              check=True, capture_output=True, text=True).stdout.strip()
        if subprocess.run(["zfs", "set", f"refreservation={free}", hog],
                          capture_output=True).returncode == 0:
            return
    raise AssertionError(f"could not reserve the free space of {hog}'s pool")


def test_a_full_target_pool_aborts_then_apply_again_completes(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    b = cluster.machines[1]
    hog = f"{b.pool}/hog"
    deploy_writer(cluster, tmp_path, "full", fill_mib=4)
    run = Apply(cluster, "full")
    try:
        for event in run:
            # The room checks passed; the pool fills up before the first byte is sent, with
            # ployzctl held still so that it does not race the filling.
            if event.get("event") == "transfer" and event["state"] == "started":
                run.process.send_signal(signal.SIGSTOP)
                try:
                    fill_pool(hog)
                finally:
                    run.process.send_signal(signal.SIGCONT)
                break
        else:
            pytest.fail("the run never started a send")
        status, stderr = run.finish()
        assert status == 1, stderr
        assert "aborted during pre-copy" in stderr and "out of space" in stderr, stderr
        (aborted,) = run.of("aborted")
        assert aborted["left"] == [], aborted
        assert run.of("committed") == []
        assert "nothing was committed; the service runs on its source as before" in stderr
        assert_still_on_source(cluster, "full")
        assert not dataset_exists(cluster, b, "full")
        assert containers(cluster, b, "full") == []
    finally:
        subprocess.run(["zfs", "destroy", hog], check=False, capture_output=True)

    again = Apply(cluster, "full")
    status, stderr = again.finish()
    assert status == 0, stderr
    assert again.of("recover") == []  # the abort left nothing to settle
    assert_moved(cluster, "full", again, again.before_fence)


@contextlib.contextmanager
def agent_lost(cluster: Cluster, machine: Machine) -> Iterator[None]:
    """The machine's agent is dead inside the block, and back after it."""
    cluster.stop_agent(machine)
    try:
        yield
    finally:
        cluster.start_agent(machine)


def test_target_agent_lost_before_commit_aborts_then_apply_again_completes(
        cluster: Cluster, tmp_path: Path) -> None:
    b = cluster.machines[1]
    peers_before = peer_rows(b)
    agent_log = b.ployz_home.agent_daemon(b.config).log
    log_before = agent_log.stat().st_size
    deploy_writer(cluster, tmp_path, "lost", fill_mib=4)
    run = Apply(cluster, "lost")
    for event in run:
        if event == {"event": "phase", "phase": "start"}:
            # Held still while the target's agent dies, so that the loss lands exactly here.
            run.process.send_signal(signal.SIGSTOP)
            break
    else:
        pytest.fail("the run never reached its start phase")
    with agent_lost(cluster, b):
        run.process.send_signal(signal.SIGCONT)
        status, stderr = run.finish()
    assert status == 1, stderr
    assert "aborted during start" in stderr
    assert "restarted container" in stderr and "on machine-a" in stderr
    (aborted,) = run.of("aborted")
    assert aborted["step"] == "start" and run.of("committed") == []
    # What the lost agent could not undo is named, each on machine-b: the container created
    # there before the fence and the received dataset.
    assert aborted["left"] and all("machine-b" in left for left in aborted["left"])
    assert "LEFT BEHIND" in stderr and "machine-b/lost.data" in stderr
    assert_still_on_source(cluster, "lost")
    assert [c.labels[LABEL_DEPLOY] for c in containers(cluster, b, "lost")] == [
        aborted["deploy_id"]]
    assert dataset_exists(cluster, b, "lost")  # left behind; machine-a still owns the volume

    again = Apply(cluster, "lost")
    status, stderr = again.finish()
    assert status == 0, stderr
    (rolled_back,) = again.of("rolled-back")
    assert rolled_back["deploy_id"] == aborted["deploy_id"] and rolled_back["left"] == []
    assert_moved(cluster, "lost", again, again.before_fence)

    # The restarted agent found its WireGuard peers in place, through all its reconciles since:
    # it added and removed none (a peer removed and added again would count its bytes from
    # zero); the commit of the move only updated the allowed IPs (the service's address).
    peers_after = peer_rows(b)
    assert set(peers_after) == set(peers_before)
    assert all(peers_after[k].rx_bytes >= peers_before[k].rx_bytes for k in peers_before)
    with agent_log.open("rb") as log:
        log.seek(log_before)
        since = log.read().decode(errors="replace")
    churn = [line for line in since.splitlines() if "overlay peer" in line
             and (" added:" in line or " removed" in line)]
    assert churn == [], since
