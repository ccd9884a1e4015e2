"""The move onto three replicated JetStream servers, through the functions ``machine init`` and
``machine join`` run: the first machine's single server and each machine's clustered server
started from the configurations they write (on 127.0.0.1-3, loopback addresses standing in for
three machines), each with its certificate of the cluster's CA (TLS for clients, mutual TLS on
the routes), then the move, twice, as a join stopped halfway and run again would make it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.control import ControlPlaneMoved, open_control_plane
from ployz.control.nats_server import NatsServerConfig, new_credentials
from ployz.control.url import ca_of, ca_parameter, nats_servers, open_store
from ployz.deploy.membership import daemons
from ployz.deploy.membership.certificates import ensure_server, new_authority, server_tls
from ployz.deploy.membership.local import MachineHome
from ployz.deploy.membership.replication import move_to_replicas, start_replica
from tests.host.control.conftest import free_port

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
OPERATOR = "ed25519:" + base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(autouse=True)
def without_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Process mode even on a host that systemd runs: a test never installs a unit."""
    monkeypatch.setattr(daemons, "SYSTEMD_RUN_DIR", tmp_path / "no-systemd")


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[list[MachineHome]]:
    """Three machines' homes; every server started in them is stopped at the end."""
    made = [MachineHome(tmp_path / f"machine-{i}") for i in range(1, 4)]
    for home in made:
        home.prepare()
    yield made
    for home in made:
        for config, daemon in ((home.nats_config, home.nats_daemon),
                               (home.replica_config, home.replica_daemon)):
            if config.exists():
                daemons.stop(daemon())


def test_three_machines_servers_take_the_control_plane_over_and_a_second_move_changes_nothing(
        homes: list[MachineHome]) -> None:
    user, password = new_credentials()
    authority = new_authority("ployz")
    for index, home in enumerate(homes):
        ensure_server(home.nats_tls, authority, f"machine-{index + 1}", HOSTS[index])
    first = homes[0]
    single = NatsServerConfig(server_name="machine-1", host=HOSTS[0], port=free_port(),
                              store_dir=first.nats_dir / "store", user=user, password=password,
                              tls=server_tls(first.nats_tls))
    single.write(first.nats_config)
    daemons.start(first.nats_daemon())
    url = single.client_url(ca=ca_parameter(authority.cert_der))
    for index, home in enumerate(homes):  # init, then the second and third join
        start_replica(home, f"machine-{index + 1}", url, HOSTS[index], HOSTS[:index + 1])
    with open_control_plane(url) as cp:
        cp.create_cluster("ployz", [OPERATOR])
        cp.set_server_authority(authority.key_pem.decode())
        machines = [cp.add_machine(f"machine-{i}", base64.b64encode(bytes([i]) * 32).decode(),
                                   f"{host}:51820") for i, host in enumerate(HOSTS, start=1)]
        replicated = move_to_replicas(cp, machines)
        assert [s.rpartition("@")[2] for s in nats_servers(replicated)] == [
            f"{host}:4223" for host in HOSTS]
        assert ca_of(replicated) == authority.cert_der
        assert move_to_replicas(cp, machines) == replicated  # run again: finishes, no error
    with open_control_plane(url) as followed:
        assert followed.location == replicated
        assert followed.get_cluster().control_servers == ("machine-1", "machine-2", "machine-3")
        # Every server has its certificate: the CA's key leaves the control plane.
        assert followed.get_cluster().server_authority is None
        assert [m.id for m in followed.list_machines()] == ["machine-1", "machine-2", "machine-3"]
    sealed = open_store(url)
    try:
        with pytest.raises(ControlPlaneMoved):
            sealed.create("invites", "x", b"{}")
    finally:
        sealed.close()
