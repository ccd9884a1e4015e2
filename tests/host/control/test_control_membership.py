"""The cluster document and its members, on both backends: creating the cluster, joining machines
(addresses, idempotent retries, conflicts, concurrent joins), invites, and removing machines."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from ployz.control import (
    ClusterExists,
    ControlPlane,
    DuplicateWireGuardKey,
    InvalidArgument,
    InvalidName,
    InviteExpired,
    InviteUsed,
    Machine,
    MachineBusy,
    MachineExists,
    NoCluster,
    PutService,
    PutVolume,
    Service,
    UnknownInvite,
    UnknownMachine,
    Volume,
    deploy_lock_name,
    open_control_plane,
)

WORKER = Path(__file__).with_name("membership_worker.py")
OPERATOR = "ed25519:" + base64.b64encode(bytes(range(32))).decode()
OTHER_OPERATOR = "ed25519:" + base64.b64encode(bytes(range(1, 33))).decode()
ENDPOINT = "192.0.2.1:51820"
PROMPT_S = 10.0


def wireguard_key(index: int) -> str:
    return base64.b64encode(bytes([index]) * 32).decode()


@pytest.fixture
def cluster(cp: ControlPlane) -> ControlPlane:
    """A control plane holding cluster ``prod`` with the default ranges."""
    cp.create_cluster("prod", [OPERATOR])
    return cp


def join(cp: ControlPlane, *machine_ids: str) -> list[Machine]:
    return [cp.add_machine(m, wireguard_key(i), ENDPOINT) for i, m in enumerate(machine_ids, 1)]


# --- the cluster ---------------------------------------------------------------------------------


def test_a_control_plane_without_a_cluster_says_how_to_make_one(cp: ControlPlane) -> None:
    message = r"this control plane has no cluster: run `ployzctl machine init` first"
    with pytest.raises(NoCluster, match=message):
        cp.get_cluster()
    with pytest.raises(NoCluster):
        cp.add_machine("machine-a", wireguard_key(1), ENDPOINT)
    assert cp.list_machines() == []


def test_create_cluster_is_idempotent_for_the_same_name_and_keys(cp: ControlPlane) -> None:
    created = cp.create_cluster("prod", [OPERATOR, OTHER_OPERATOR])
    assert (created.name, created.overlay, created.subnets, created.subnet_prefix) == (
        "prod",
        "10.210.0.0/16",
        "10.211.0.0/16",
        24,
    )
    assert created.trust == (OPERATOR, OTHER_OPERATOR)
    assert created.allocations == {}
    assert cp.create_cluster("prod", [OTHER_OPERATOR, OPERATOR]) == created
    assert cp.get_cluster() == created


def test_another_cluster_is_refused_naming_the_existing_one(cp: ControlPlane) -> None:
    created = cp.create_cluster("prod", [OPERATOR], overlay="172.30.0.0/16")
    with pytest.raises(ClusterExists, match=r"already holds cluster 'prod': not 'staging'"):
        cp.create_cluster("staging", [OPERATOR])
    with pytest.raises(ClusterExists, match="'prod': it trusts other operator keys"):
        cp.create_cluster("prod", [OTHER_OPERATOR])
    assert cp.get_cluster() == created


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overlay": "10.211.0.0/16"}, "cluster 'prod': the overlay 10.211.0.0/16 overlaps"),
        ({"subnets": "10.211.0.0/33"}, r"cluster 'prod': subnets: '10.211.0.0/33' is not an IPv4"),
        ({"subnet_prefix": 8}, "subnet_prefix /8 must be longer than the subnets' /16"),
        ({"trust": []}, "trust: Tuple should have at least 1 item"),
        ({"trust": ["not-a-key"]}, r"trust\.0: an operator public key is ed25519:BASE64"),
    ],
)
def test_a_malformed_cluster_is_refused_and_nothing_stored(
    cp: ControlPlane, options: dict, message: str
) -> None:
    ranges = {name: value for name, value in options.items() if name != "trust"}
    with pytest.raises(InvalidArgument, match=message):
        cp.create_cluster("prod", options.get("trust", [OPERATOR]), **ranges)
    with pytest.raises(NoCluster):
        cp.get_cluster()


def test_a_malformed_cluster_name_is_refused(cp: ControlPlane) -> None:
    with pytest.raises(InvalidName, match="invalid cluster name 'my cluster'"):
        cp.create_cluster("my cluster", [OPERATOR])
    with pytest.raises(NoCluster):
        cp.get_cluster()


# --- joining ------------------------------------------------------------------------------------


def test_machines_get_addresses_in_join_order(cluster: ControlPlane) -> None:
    joined = join(cluster, "machine-a", "machine-b", "machine-c")
    assert [(m.id, m.overlay_ip, m.subnet) for m in joined] == [
        ("machine-a", "10.210.0.1", "10.211.1.0/24"),
        ("machine-b", "10.210.0.2", "10.211.2.0/24"),
        ("machine-c", "10.210.0.3", "10.211.3.0/24"),
    ]
    machine = cluster.get_machine("machine-b")
    assert (machine.lifecycle, machine.wireguard_key, machine.endpoint) == (
        "active",
        wireguard_key(2),
        ENDPOINT,
    )
    allocations = cluster.get_cluster().allocations
    assert {m: (a.overlay_ip, a.subnet, a.wireguard_key) for m, a in allocations.items()} == {
        m.id: (m.overlay_ip, m.subnet, m.wireguard_key) for m in joined
    }


def test_adding_the_same_machine_again_returns_it_unchanged(cluster: ControlPlane) -> None:
    (first,) = join(cluster, "machine-a")
    again = cluster.add_machine("machine-a", wireguard_key(1), "198.51.100.7:51820")
    assert again == first  # its endpoint too: a retry does not re-register
    assert cluster.get_machine("machine-a") == first
    assert list(cluster.get_cluster().allocations) == ["machine-a"]


def test_a_member_id_with_another_key_is_refused(cluster: ControlPlane) -> None:
    join(cluster, "machine-a")
    before = cluster.get_cluster()
    message = (
        r"machine 'machine-a' is already a member \(overlay 10\.210\.0\.1\) with another "
        r"WireGuard key: choose another id, or take the old one out first "
        r"\(`ployzctl machine rm machine-a`\)"
    )
    with pytest.raises(MachineExists, match=message):
        cluster.add_machine("machine-a", wireguard_key(9), ENDPOINT)
    assert cluster.get_cluster() == before
    assert cluster.get_machine("machine-a").wireguard_key == wireguard_key(1)


def test_a_registered_machine_without_a_key_is_a_member_too(cluster: ControlPlane) -> None:
    cluster.register_machine(Machine(id="machine-a", overlay_ip="10.0.0.1", subnet="10.0.0.0/24"))
    with pytest.raises(MachineExists, match="machine-a"):
        cluster.add_machine("machine-a", wireguard_key(1), ENDPOINT)
    assert cluster.get_cluster().allocations == {}


def test_a_key_another_machine_has_is_refused(cluster: ControlPlane) -> None:
    join(cluster, "machine-a")
    before = cluster.get_cluster()
    with pytest.raises(
        DuplicateWireGuardKey,
        match=re.escape(wireguard_key(1))
        + " is already the key of machine 'machine-a': every machine needs a key of its own",
    ):
        cluster.add_machine("machine-b", wireguard_key(1), ENDPOINT)
    assert cluster.get_cluster() == before
    with pytest.raises(UnknownMachine):
        cluster.get_machine("machine-b")


@pytest.mark.parametrize(
    ("machine_id", "key", "endpoint", "error", "message"),
    [
        ("machine a", wireguard_key(1), ENDPOINT, InvalidName, "invalid machine id"),
        (
            "machine-a",
            "short",
            ENDPOINT,
            InvalidArgument,
            "machine 'machine-a': WireGuard key 'short': a WireGuard public key is 32 bytes",
        ),
        (
            "machine-a",
            wireguard_key(1),
            "192.0.2.1",
            InvalidArgument,
            "machine 'machine-a': endpoint '192.0.2.1': an endpoint is HOST:PORT",
        ),
    ],
)
def test_malformed_joins_are_refused_and_nothing_allocated(
    cluster: ControlPlane, machine_id: str, key: str, endpoint: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        cluster.add_machine(machine_id, key, endpoint)
    assert cluster.get_cluster().allocations == {}
    assert cluster.list_machines() == []


def test_the_ranges_run_out_with_a_clear_error(cp: ControlPlane) -> None:
    cp.create_cluster("prod", [OPERATOR], subnets="10.211.0.0/23")  # one subnet after the first
    join(cp, "machine-a")
    with pytest.raises(
        Exception,
        match=r"cluster 'prod' has no free /24 subnet left in "
        r"10\.211\.0\.0/23 \(1 allocated\)",
    ):
        cp.add_machine("machine-b", wireguard_key(2), ENDPOINT)
    assert list(cp.get_cluster().allocations) == ["machine-a"]


def test_concurrent_joins_in_threads_get_distinct_addresses(control_url: str) -> None:
    with open_control_plane(control_url) as setup:
        setup.create_cluster("prod", [OPERATOR])
    machine_ids = [f"machine-{i}" for i in range(8)]
    joined: list[Machine] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(machine_ids))

    def add(index: int, machine_id: str) -> None:
        try:
            with open_control_plane(control_url) as cp:
                barrier.wait()
                joined.append(cp.add_machine(machine_id, wireguard_key(index + 1), ENDPOINT))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=item) for item in enumerate(machine_ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert_distinct_and_recorded(
        control_url, [(m.id, m.overlay_ip, m.subnet) for m in joined], len(machine_ids)
    )


def test_concurrent_joins_in_processes_get_distinct_addresses(
    control_url: str, tmp_path: Path
) -> None:
    with open_control_plane(control_url) as setup:
        setup.create_cluster("prod", [OPERATOR])
    gate = tmp_path / "gate"
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                control_url,
                f"machine-{i}",
                wireguard_key(i + 1),
                str(gate),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n"
    gate.touch()
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        results.append(json.loads(out))
    assert_distinct_and_recorded(
        control_url, [(r["id"], r["overlay_ip"], r["subnet"]) for r in results], len(workers)
    )


def assert_distinct_and_recorded(
    control_url: str, joined: list[tuple[str, str, str]], count: int
) -> None:
    assert len(joined) == count
    assert len({ip for _, ip, _ in joined}) == count
    assert len({subnet for _, _, subnet in joined}) == count
    # The lowest addresses, none skipped: every join allocated exactly once.
    assert {ip for _, ip, _ in joined} == {f"10.210.0.{i}" for i in range(1, count + 1)}
    with open_control_plane(control_url) as cp:
        allocations = cp.get_cluster().allocations
        stored = {(m.id, m.overlay_ip, m.subnet) for m in cp.list_machines()}
    assert stored == set(joined)
    assert {(m, a.overlay_ip, a.subnet) for m, a in allocations.items()} == set(joined)


# --- invites ------------------------------------------------------------------------------------


def test_an_invite_admits_one_machine(cp: ControlPlane) -> None:
    invite = cp.create_invite(60)
    assert len(invite.id) == 32 and int(invite.id, 16) >= 0
    assert invite.expires - invite.created == timedelta(seconds=60)
    assert (invite.used_by, invite.used_at) == (None, None)
    assert cp.get_invite(invite.id) == invite

    used = cp.consume_invite(invite.id, "machine-a")
    assert used.used_by == "machine-a" and used.used_at is not None
    assert cp.get_invite(invite.id) == used
    stamp = re.escape(used.used_at.isoformat(timespec="seconds"))
    for machine_id in ("machine-b", "machine-a"):
        with pytest.raises(
            InviteUsed,
            match=f"invite {invite.id} was used by machine "
            f"'machine-a' at {stamp}: an invite admits one machine",
        ):
            cp.consume_invite(invite.id, machine_id)
    assert cp.get_invite(invite.id) == used
    assert cp.create_invite(60).id != invite.id


def test_release_undoes_only_the_same_machines_consume(cp: ControlPlane) -> None:
    invite = cp.create_invite(60)
    used = cp.consume_invite(invite.id, "machine-a")
    cp.release_invite(invite.id, "machine-b")  # not its consume: nothing happens
    assert cp.get_invite(invite.id) == used
    cp.release_invite(invite.id, "machine-a")
    assert cp.get_invite(invite.id) == invite
    assert cp.consume_invite(invite.id, "machine-b").used_by == "machine-b"
    cp.release_invite("0" * 32, "machine-a")  # unknown: nothing to release


def test_an_expired_invite_is_refused_saying_when(cp: ControlPlane) -> None:
    invite = cp.create_invite(0.2)
    time.sleep(0.3)
    stamp = re.escape(invite.expires.isoformat(timespec="seconds"))
    with pytest.raises(InviteExpired, match=f"invite {invite.id} expired at {stamp}"):
        cp.consume_invite(invite.id, "machine-a")
    assert cp.get_invite(invite.id) == invite


def test_unknown_and_malformed_invites_are_refused(cp: ControlPlane) -> None:
    unknown = "0123456789abcdef" * 2
    with pytest.raises(UnknownInvite, match=f"unknown invite {unknown}: ask an operator"):
        cp.get_invite(unknown)
    with pytest.raises(UnknownInvite):
        cp.consume_invite(unknown, "machine-a")
    with pytest.raises(InvalidName, match=r"invalid invite id 'shop\.>'"):
        cp.consume_invite("shop.>", "machine-a")
    with pytest.raises(InvalidArgument, match="ttl must be positive seconds, got 0"):
        cp.create_invite(0)


# --- removing -----------------------------------------------------------------------------------


def place_on(cp: ControlPlane, machine_id: str) -> None:
    lease = cp.acquire(deploy_lock_name("shop"), "deploy-1", ttl=60)
    cp.commit(
        "shop",
        lease.token,
        [
            PutService(
                service=Service(namespace="shop", name="web", image="nginx", machine=machine_id)
            ),
            PutVolume(
                volume=Volume(namespace="shop", name="db", dataset="tank/shop/db", owner=machine_id)
            ),
        ],
    )
    cp.release(lease.name, lease.token)


def test_a_busy_machine_is_refused_naming_every_blocker(cluster: ControlPlane) -> None:
    join(cluster, "machine-a", "machine-b")
    place_on(cluster, "machine-a")
    before = (cluster.get_cluster(), cluster.get_machine("machine-a"))
    with pytest.raises(MachineBusy) as busy:
        cluster.remove_machine("machine-a")
    assert busy.value.blockers == (
        "service shop/web is placed on it",
        "volume shop/db is owned by it",
        "lifecycle is active: drain it first (`ployzctl machine drain machine-a --migrate`)",
    )
    assert str(busy.value).startswith("machine 'machine-a' cannot be removed: service shop/web")
    assert "`ployzctl machine rm machine-a --force`" in str(busy.value)
    assert (cluster.get_cluster(), cluster.get_machine("machine-a")) == before

    cluster.set_lifecycle("machine-a", "draining")
    with pytest.raises(MachineBusy) as busy:
        cluster.remove_machine("machine-a")
    assert busy.value.blockers == (
        "service shop/web is placed on it",
        "volume shop/db is owned by it",
    )
    with pytest.raises(MachineBusy, match="lifecycle is active") as busy:
        cluster.remove_machine("machine-b")
    assert len(busy.value.blockers) == 1


def test_force_removes_a_busy_machine_and_reports_its_orphans(cluster: ControlPlane) -> None:
    join(cluster, "machine-a", "machine-b")
    place_on(cluster, "machine-a")
    machine = cluster.get_machine("machine-a")
    removal = cluster.remove_machine("machine-a", force=True)
    assert removal.machine == machine
    assert removal.orphans == ("shop/web", "shop/db")
    with pytest.raises(UnknownMachine):
        cluster.get_machine("machine-a")
    assert [m.id for m in cluster.list_machines()] == ["machine-b"]
    assert list(cluster.get_cluster().allocations) == ["machine-b"]
    with pytest.raises(UnknownMachine, match="machine-a"):
        cluster.remove_machine("machine-a", force=True)


def test_a_machine_running_a_control_server_is_refused_and_force_takes_it_out(
        cluster: ControlPlane) -> None:
    join(cluster, "machine-a", "machine-b", "machine-c")
    cluster.set_control_servers(["machine-a", "machine-b", "machine-c"])
    cluster.set_lifecycle("machine-b", "draining")
    before = cluster.get_cluster()
    with pytest.raises(MachineBusy) as busy:
        cluster.remove_machine("machine-b")
    assert busy.value.blockers == (
        "it runs one of the control plane's three JetStream servers, which cannot move to "
        "another machine yet",)
    assert cluster.get_cluster() == before
    cluster.remove_machine("machine-b", force=True)
    assert cluster.get_cluster().control_servers == ("machine-a", "machine-c")


def test_a_removed_machines_addresses_go_to_the_next_join(cluster: ControlPlane) -> None:
    join(cluster, "machine-a", "machine-b", "machine-c")
    cluster.set_lifecycle("machine-b", "draining")
    removal = cluster.remove_machine("machine-b")
    assert removal.orphans == ()
    joined = cluster.add_machine("machine-d", wireguard_key(4), ENDPOINT)
    assert (joined.overlay_ip, joined.subnet) == ("10.210.0.2", "10.211.2.0/24")
    # The removed id may join again, with a new key, and gets the next free addresses.
    again = cluster.add_machine("machine-b", wireguard_key(5), ENDPOINT)
    assert (again.overlay_ip, again.subnet) == ("10.210.0.4", "10.211.4.0/24")


def test_removal_wins_over_heartbeats_racing_it(cluster: ControlPlane, control_url: str) -> None:
    join(cluster, "machine-a")
    cluster.set_lifecycle("machine-a", "draining")
    stop = threading.Event()
    beats: list[int] = []

    def heartbeat() -> None:
        with open_control_plane(control_url) as agent:
            while not stop.is_set():
                try:
                    agent.heartbeat("machine-a")
                except UnknownMachine:
                    return
                beats.append(1)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        while len(beats) < 5:
            time.sleep(0.01)
        assert cluster.remove_machine("machine-a").machine.id == "machine-a"
    finally:
        stop.set()
        thread.join(30)
    with pytest.raises(UnknownMachine):
        cluster.get_machine("machine-a")
    assert cluster.get_cluster().allocations == {}


def test_a_machine_registered_without_a_cluster_can_be_removed(
    cp: ControlPlane, machines: tuple[str, ...]
) -> None:
    cp.set_lifecycle("machine-a", "draining")
    assert cp.remove_machine("machine-a").machine.id == "machine-a"
    assert [m.id for m in cp.list_machines()] == ["machine-b", "machine-c"]


# --- watching -----------------------------------------------------------------------------------


def test_watch_machines_wakes_on_a_join_and_a_removal(
    cluster: ControlPlane, control_url: str
) -> None:
    watch = cluster.watch_machines()
    try:
        with open_control_plane(control_url) as other:
            threading.Timer(0.3, lambda: join(other, "machine-a")).start()
            assert watch.wait(PROMPT_S)
            while watch.wait(0.6):
                pass  # the join's own writes may arrive as more than one change
            other.set_lifecycle("machine-a", "draining")
            assert watch.wait(PROMPT_S)
            other.remove_machine("machine-a")
            assert watch.wait(PROMPT_S)
        assert [m.id for m in cluster.list_machines()] == []
    finally:
        watch.close()
