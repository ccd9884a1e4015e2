"""Machines join and leave the sandbox cluster with the commands an operator runs on real machines:
``machine invite`` on the first machine and ``machine join`` on a new one make three, and the
third join moves the NATS control plane onto three replicated JetStream servers, which every
agent then follows; a fourth joins after a service exists and the service moves there; ``machine
drain --migrate`` and ``machine rm`` take it out. Every agent adds and drops the WireGuard peers
by itself. Then the joins and removals that must be refused, each with its message and no change
to the control plane or to any machine's WireGuard: those a real member is needed for (a used
token, a duplicate id, a busy machine) and a forged token (the refused ``rm`` of a machine
running a JetStream server is in tests/host/control/test_control_membership.py). Last, the
replicated servers' failures: one killed during a migration's pre-copy, the leader killed as a
migration commits (marker ``replicated_failures``: ``make test-replicated`` runs them alone).
The refusals that come before the control plane knows anything (expired token, foreign
endpoint, unreachable control plane) are in tests/host/membership/test_join_refusals.py.

The module borrows the session's two machines and adds three: machine-c (no Docker), which stays
(it runs one of the servers; the module runs last); a spare with wires and a pool but no Docker,
which never joins, where the bad joins are tried (the used token is machine-c's) before any
service runs (a writer's syncs slow every command under emulation); and the fourth member,
named machine-e after the spare, which leaves again.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import pytest

from ployz.control import ControlPlane, open_control_plane
from ployz.control.store import KINDS
from ployz.control.url import ca_of, ca_parameter, nats_servers, open_store
from ployz.deploy.inspect import service_rows
from ployz.deploy.membership.founding import NATS_PORT
from ployz.deploy.membership.replication import credentials_of
from ployz.sandbox.cluster import Cluster, Machine
from ployz.transfer.addresses import parse_address
from tests.e2e.migration_run import Apply, assert_moved, commits, service
from tests.e2e.sandbox_operator import (
    bucket_placement,
    dump,
    fresh_token,
    members,
    ployzctl,
    remove_services,
)
from tests.e2e.wireguard_view import peer_rows, peers
from tests.e2e.writer_service import containers, deploy_writer

pytestmark = pytest.mark.timeout(900)

PEER_CHANGE_S = 30.0
"""How soon every agent must have applied a membership change to its WireGuard peers."""


def wireguard_state(cluster: Cluster) -> dict[str, set[str]]:
    return {m.id: peers(m) for m in cluster.machines}


def wait_for(what: str, check: object, timeout_s: float = PEER_CHANGE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(0.5)


def meshed(cluster: Cluster) -> bool:
    """Whether every member's WireGuard has exactly the other members as peers."""
    keys = {machine_id: key for machine_id, (_, key, _) in members(cluster).items()}
    return all(peers(m) == {k for i, k in keys.items() if i != m.id} for m in cluster.machines)


def machine_rows(cluster: Cluster) -> dict[str, dict]:
    done = ployzctl(cluster, "machine", "ls", "--json")
    assert done.returncode == 0, done.stderr
    return {row["id"]: row for row in json.loads(done.stdout)}


@dataclass
class Joined:
    """A machine that joined, and its token: spent, which the used-token test tries again."""

    machine: Machine
    token: str


@pytest.fixture(scope="module")
def third(cluster: Cluster, machine_c: Machine) -> Joined:
    """The session's third machine (see the conftest), and the token it joined with."""
    return Joined(machine_c, cluster.join_tokens[machine_c.id])


@pytest.fixture(scope="module")
def spare(cluster: Cluster, third: Joined) -> Iterator[Machine]:
    """A machine with its wires and pool ready that never joins: where bad joins are tried
    (no Docker: it never runs a service)."""
    machine = cluster.prepare_machine(docker=False)
    yield machine
    cluster.forget(machine)


@pytest.fixture(scope="module")
def machine_d(cluster: Cluster, third: Joined,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """The story of a fourth machine: it joins after a service exists, the service moves to
    it, it is drained and removed. Its steps are checked by the tests that take it."""
    deploy_writer(cluster, tmp_path_factory.mktemp("grow"), "grow", fill_mib=1)
    machine = cluster.prepare_machine()
    cluster.join(machine)
    try:
        yield machine
    finally:
        leave(cluster, machine)


def leave(cluster: Cluster, machine: Machine) -> None:
    if machine not in cluster.machines:
        return
    for args in (("machine", "drain", machine.id, "--migrate"), ("machine", "rm", machine.id)):
        done = ployzctl(cluster, *args)
        assert done.returncode == 0, done.stderr
    cluster.forget(machine)


def join(machine: Machine, token: str, machine_id: str | None = None,
         endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """``machine join`` on ``machine``, with the exit status kept (refusals are the point)."""
    arguments = machine.member_arguments()
    if endpoint is not None:
        arguments[arguments.index("--endpoint") + 1] = endpoint
    return subprocess.run(
        machine.endpoint.nsenter("ployzctl", "machine", "join", token,
                                 "--id", machine_id or machine.id, *arguments),
        capture_output=True, text=True, check=False, timeout=600)


def service_addresses_by_machine(cp: ControlPlane) -> dict[str, set[str]]:
    """The ``/32`` of every service address, by the machine its route points to (earlier
    modules' services stay in the control plane: their containers go, their facts stay)."""
    routed: dict[str, set[str]] = {}
    for row in service_rows(cp):
        if row["address"] is not None:
            routed.setdefault(row["route"], set()).add(f"{row['address']}/32")
    return routed


def host_of(cluster: Cluster, namespace: str) -> Machine:
    """The machine the control plane places the namespace's one service on."""
    with open_control_plane(cluster.control_url) as cp:
        (row,) = service_rows(cp, namespace)
    return next(m for m in cluster.machines if m.id == row["machine"])


def test_three_machines_formed_by_init_invite_join_are_alive_through_nats(
        cluster: Cluster, third: Joined) -> None:
    wait_for("every machine has every other as its WireGuard peers", lambda: meshed(cluster))
    rows = machine_rows(cluster)
    assert set(rows) == {"machine-a", "machine-b", "machine-c"}
    assert cluster.control_url.startswith("nats://")
    for row in rows.values():
        assert row["liveness"] == "alive" and row["lifecycle"] == "active"
        assert row["endpoint"] and row["subnet"] and row["overlay_ip"]
    assert len({row["overlay_ip"] for row in rows.values()}) == 3
    assert len({row["subnet"] for row in rows.values()}) == 3
    assert meshed(cluster)
    with open_control_plane(cluster.control_url) as cp:
        facts = {m.id: m for m in cp.list_machines()}
        routed = service_addresses_by_machine(cp)
    for machine in cluster.machines:
        shown = peer_rows(machine)
        for other in (f for f in facts.values() if f.id != machine.id):
            assert other.wireguard_key is not None
            peer = shown[other.wireguard_key]
            wanted = {f"{other.overlay_ip}/32", other.subnet, *routed.get(other.id, ())}
            assert (peer.endpoint, peer.allowed_ips, peer.keepalive) == (
                other.endpoint, wanted, "25"), machine.id


def test_the_third_join_moved_the_control_plane_onto_three_replicated_servers(
        cluster: Cluster, third: Joined) -> None:
    """Each of the three machines runs a JetStream server, every bucket is replicated on all
    three, the first machine's single server is sealed and points there, and the agents of
    machine-a and machine-b rewrote their control files to the new URL by themselves."""
    hosts = {m.endpoint.underlay_ip for m in cluster.machines}
    wait_for("every machine's control file names the three replicated servers",
             lambda: all({parse_address(s.rpartition("@")[2])[0]
                          for s in nats_servers(m.config.control)} == hosts
                         for m in cluster.machines))
    for kind in KINDS:
        placement = bucket_placement(cluster, kind)
        assert placement.replicas == 3, kind
        assert {placement.leader, *placement.current} == {m.id for m in cluster.machines}, kind
    with open_control_plane(cluster.control_url) as cp:
        assert cp.get_cluster().control_servers == ("machine-a", "machine-b", "machine-c")
    single = open_store(single_server_url(cluster))
    try:
        assert single.moved_to() == cluster.control_url
    finally:
        single.close()


def single_server_url(cluster: Cluster) -> str:
    """The URL of the first machine's single JetStream server, where the cluster began."""
    user, password = credentials_of(cluster.control_url)
    ca = ca_of(cluster.control_url)
    assert ca is not None, "the sandbox's control plane speaks TLS"
    return (f"nats://{user}:{password}@{cluster.first.endpoint.underlay_ip}:{NATS_PORT}"
            f"?ca={ca_parameter(ca)}")


def _refused_without_change(cluster: Cluster, spare: Machine, token: str,
                            machine_id: str | None = None, endpoint: str | None = None) -> str:
    """Runs a join that must be refused; returns its message after checking that the control
    plane, the membership and every machine's WireGuard are as they were."""
    before, members_before, wg_before = dump(cluster), members(cluster), wireguard_state(cluster)
    done = join(spare, token, machine_id, endpoint)
    assert done.returncode != 0, done.stdout
    assert (dump(cluster), members(cluster), wireguard_state(cluster)) == (
        before, members_before, wg_before)
    assert done.stderr.startswith("ployzctl: "), done.stderr
    return done.stderr


def test_a_used_token_is_refused(cluster: Cluster, third: Joined, spare: Machine) -> None:
    """machine-c's token, spent when it joined, fails for any other machine."""
    message = _refused_without_change(cluster, spare, third.token, "machine-y")
    assert "was used by machine 'machine-c'" in message


def test_a_forged_token_is_refused(cluster: Cluster, spare: Machine) -> None:
    token = fresh_token(cluster)
    prefix, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["expires"] += 86400
    forged = ".".join([prefix, base64.urlsafe_b64encode(json.dumps(claims).encode())
                       .decode().rstrip("="), signature])
    message = _refused_without_change(cluster, spare, forged)
    assert "not signed by an operator" in message


def test_a_duplicate_machine_id_is_refused(cluster: Cluster, spare: Machine) -> None:
    message = _refused_without_change(cluster, spare, fresh_token(cluster), "machine-b")
    assert "machine-b" in message and "already a member" in message


def test_a_fourth_machine_joins_after_services_exist_and_a_service_moves_to_it(
        cluster: Cluster, machine_d: Machine) -> None:
    d = machine_d
    wait_for(f"every machine has {d.id} as a peer", lambda: meshed(cluster))
    assert len(cluster.machines) == 4
    assert not d.ployz_home.replica_config.exists()  # the three servers are the first three's
    moved = ployzctl(cluster, "migrate", "apply", "grow/writer", "--to", d.id)
    assert moved.returncode == 0, moved.stderr
    (running,) = containers(cluster, d, "grow")
    assert running.state == "running"
    assert host_of(cluster, "grow") is d


def test_drain_then_rm_empties_the_machine_and_every_wireguard_drops_it(
        cluster: Cluster, machine_d: Machine) -> None:
    d = machine_d
    drained = ployzctl(cluster, "machine", "drain", d.id, "--migrate")
    assert drained.returncode == 0, drained.stderr
    assert containers(cluster, d, "grow") == []
    assert host_of(cluster, "grow") in cluster.machines[:2]  # not machine-c, which has no Docker
    _, d_key, _ = members(cluster)[d.id]
    removed = ployzctl(cluster, "machine", "rm", d.id)
    assert removed.returncode == 0, removed.stderr
    cluster.forget(d)
    assert d.id not in machine_rows(cluster)
    wait_for(f"no machine lists {d.id} as a WireGuard peer",
             lambda: all(d_key not in peers(m) for m in cluster.machines))
    assert meshed(cluster)


def test_rm_of_a_machine_that_hosts_a_service_is_refused_and_changes_nothing(
        cluster: Cluster, machine_d: Machine) -> None:
    busy = host_of(cluster, "grow")
    before, members_before, wg_before = dump(cluster), members(cluster), wireguard_state(cluster)
    refused = ployzctl(cluster, "machine", "rm", busy.id)
    assert refused.returncode != 0
    assert "service grow/writer" in refused.stderr and "volume grow/data" in refused.stderr
    assert "drain" in refused.stderr
    assert (dump(cluster), members(cluster), wireguard_state(cluster)) == (
        before, members_before, wg_before)


@contextlib.contextmanager
def leader_killed(cluster: Cluster) -> Iterator[Callable[[], Machine]]:
    """Gives a call that SIGKILLs the JetStream server leading the namespaces' bucket (where
    every commit is written) and returns its machine; afterwards starts it again and waits until
    every bucket has all three servers current, so the next test finds the cluster whole, and
    removes the test's service, which need not write on."""
    killed: list[Machine] = []

    def kill() -> Machine:
        leader = bucket_placement(cluster, "namespaces").leader
        machine = next(m for m in cluster.machines if m.id == leader)
        cluster.kill_replica(machine)
        killed.append(machine)
        return machine

    try:
        yield kill
    finally:
        for machine in killed:
            cluster.start_replica(machine)
        with open_control_plane(cluster.control_url) as cp:
            everyone = set(cp.get_cluster().control_servers)
        deadline = time.monotonic() + 120
        while not all(_whole(cluster, kind, everyone) for kind in KINDS):
            assert time.monotonic() < deadline, "the restarted server did not catch up in 120 s"
            time.sleep(1)
        remove_services(cluster)


def _whole(cluster: Cluster, kind: str, everyone: set[str]) -> bool:
    """Whether ``kind``'s bucket has every server as its leader or a current follower. A
    stream's information can go unanswered while the restarted server catches up and the
    bucket's group settles: that is not caught up yet, and asked again."""
    try:
        placement = bucket_placement(cluster, kind)
    except nats.errors.TimeoutError:
        return False
    return {placement.leader, *placement.current} == everyone


@pytest.mark.replicated_failures
def test_a_jetstream_server_killed_during_pre_copy_the_migration_completes(
        cluster: Cluster, tmp_path: Path) -> None:
    """The server leading the namespaces' bucket dies while data flows and stays down: the
    other two elect a new leader, the run's control-plane calls and its lock's renewals go on
    there, and the migration commits once."""
    # "replica": test_migration_failures.py's single-server kill test has "nats"
    deploy_writer(cluster, tmp_path, "replica", fill_mib=64)
    before = commits(cluster, "replica")
    run = Apply(cluster, "replica")
    with leader_killed(cluster) as kill:
        run.until_data_flows()
        kill()
        status, stderr = run.finish()
        assert status == 0, stderr
        assert run.of("aborting") == [] and len(run.of("committed")) == 1
        assert commits(cluster, "replica") == before + 1
        assert_moved(cluster, "replica", run, run.before_fence)


@pytest.mark.replicated_failures
def test_the_jetstream_leader_killed_just_before_the_commit_commits_once_or_rolls_back(
        cluster: Cluster, tmp_path: Path) -> None:
    """The leader of the bucket the commit is written to dies as the run reaches its commit.
    The run ends committed, once, or failed with the service still on machine-a; either way
    ``apply`` run again, on the two servers left, converges on one move."""
    deploy_writer(cluster, tmp_path, "leader", fill_mib=4)
    before = commits(cluster, "leader")
    run = Apply(cluster, "leader")
    with leader_killed(cluster) as kill:
        for event in run:
            if event == {"event": "phase", "phase": "commit"}:
                kill()
                break
        else:
            pytest.fail("the run never reached its commit")
        status, stderr = run.finish()
        committed = commits(cluster, "leader") - before
        assert committed in (0, 1), f"{committed} commits for one run"
        owners = [v["owner"] for v in service(cluster, "leader")["volumes"]]
        assert owners == (["machine-b"] if committed else ["machine-a"]), stderr
        if status == 0:
            assert committed == 1 and len(run.of("committed")) == 1
            assert_moved(cluster, "leader", run, run.before_fence)
            return
        again = Apply(cluster, "leader")
        status, stderr = again.finish()
        assert status == 0, stderr
        assert commits(cluster, "leader") == before + 1
        assert_moved(cluster, "leader", again, again.before_fence or run.before_fence)
