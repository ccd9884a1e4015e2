"""``ployzctl machine init``: the first machine creates the cluster.

It makes, or finds from an earlier run, everything the cluster starts from: the operator key
(the trust anchor every agent checks requests against and every join token is signed with), the
machine's WireGuard key pair, the control plane (the embedded SQLite file, or a JetStream server
whose configuration it writes, and this machine's server of the replicated JetStream cluster to
come: see ``replication``), the cluster fact with its overlay range, this machine's overlay
address and subnet, and the agent's unit. Every step reuses what is already there, so running
it again changes nothing and restarts nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ployz.control.models import ClusterInfo, Machine
from ployz.control.nats_server import NatsServerConfig, new_credentials
from ployz.control.url import ca_parameter, redact_url
from ployz.deploy.membership import daemons
from ployz.deploy.membership.certificates import (
    CertificateAuthority,
    ensure_server,
    new_authority,
    server_tls,
)
from ployz.deploy.membership.gateway import start_gateway
from ployz.deploy.membership.local import (
    GATEWAY_DAEMON,
    NATS_DAEMON,
    REPLICA_DAEMON,
    WIREGUARD_PORT,
    ControlKind,
    MachineConfig,
    MachineHome,
)
from ployz.deploy.membership.reachability import wait_for_agent, wait_for_control
from ployz.deploy.membership.replication import is_single_server, start_replica
from ployz.net.keys import public_key_of
from ployz.private_files import write_private
from ployz.transfer.addresses import parse_address
from ployz.transfer.keys import generate_private_key, load_private_key, public_key_text

NATS_PORT = 4222


@dataclass(frozen=True)
class InitOptions:
    machine_id: str
    pool: str
    endpoint: str
    control: ControlKind
    home: Path
    cluster: str = "ployz"
    docker_socket: str | None = None


@dataclass(frozen=True)
class Membership:
    """What ``init`` and ``join`` report: the machine as the control plane now records it."""

    machine: Machine
    cluster: ClusterInfo
    control: str
    started: Mapping[str, str]

    def to_json(self) -> dict[str, object]:
        return {"machine": self.machine.model_dump(mode="json"), "cluster": self.cluster.name,
                "overlay": self.cluster.overlay, "control": self.control,
                "daemons": self.started}


def with_port(endpoint: str) -> str:
    """``HOST`` or ``HOST:PORT`` as ``HOST:PORT`` (WireGuard's port by default); ValueError
    when malformed."""
    if ":" not in endpoint:
        endpoint = f"{endpoint}:{WIREGUARD_PORT}"
    parse_address(endpoint)
    return endpoint


def init_machine(options: InitOptions) -> Membership:
    home = MachineHome(options.home)
    home.prepare()
    endpoint = with_port(options.endpoint)
    operator = (load_private_key(home.operator_key) if home.operator_key.exists()
                else generate_private_key(home.operator_key))
    trust = (public_key_text(operator.public_key()),)
    wireguard_public = public_key_of(home.wireguard_private_key())
    started: dict[str, str] = {}
    authority = None
    if options.control == "nats":
        authority = _server_authority(home, options)
        server = _nats_server(home, options.machine_id, endpoint)
        ensure_server(home.nats_tls, authority, options.machine_id, server.host)
        server.write(home.nats_config)
        started[NATS_DAEMON] = daemons.start(home.nats_daemon())
        url = server.client_url(ca=ca_parameter(authority.cert_der))
        started[REPLICA_DAEMON] = start_replica(home, options.machine_id, url, server.host,
                                                [server.host])
    else:
        url = f"sqlite:///{home.control_db}"
    with wait_for_control(url) as cp:
        url = cp.location  # where a re-run finds the control plane moved to
        cluster = cp.create_cluster(options.cluster, trust)
        if authority is not None and is_single_server(url):  # the others still have to join
            cp.set_server_authority(authority.key_pem.decode())
        machine = cp.add_machine(options.machine_id, wireguard_public, endpoint)
        cluster = cp.get_cluster()
        config = MachineConfig(
            id=machine.id, cluster=cluster.name, pool=options.pool, endpoint=endpoint,
            overlay_ip=machine.overlay_ip, overlay=cluster.overlay, control=url,
            trust=cluster.trust, docker_socket=options.docker_socket,
            nats=options.control == "nats")
        home.save(config)
        started[GATEWAY_DAEMON] = start_gateway(home, endpoint)
        agent = home.agent_daemon(config)
        started[agent.name] = daemons.start(agent)
        wait_for_agent(agent, config)
        return Membership(machine, cluster, redact_url(url), started)


def _server_authority(home: MachineHome, options: InitOptions) -> CertificateAuthority:
    """The cluster's server CA: made at the first ``init``, kept (key 0600) for every later."""
    files = home.nats_tls
    kept = files.authority()
    if kept is not None:
        return kept
    authority = new_authority(options.cluster)
    files.directory.mkdir(parents=True, exist_ok=True)
    write_private(files.ca_key, authority.key_pem.decode())
    write_private(files.ca_cert, authority.cert_pem.decode())
    return authority


def _nats_server(home: MachineHome, machine_id: str, endpoint: str) -> NatsServerConfig:
    """The JetStream server's configuration; its credentials are made once and kept."""
    credentials = home.nats_dir / "credentials.json"
    home.nats_dir.mkdir(parents=True, exist_ok=True)
    if credentials.exists():
        user, password = json.loads(credentials.read_text())
    else:
        user, password = new_credentials()
        credentials.touch(mode=0o600)
        credentials.write_text(json.dumps([user, password]))
    host, _ = parse_address(endpoint)
    return NatsServerConfig(server_name=machine_id, host=host, port=NATS_PORT,
                            store_dir=home.nats_dir / "store", user=user, password=password,
                            tls=server_tls(home.nats_tls))
