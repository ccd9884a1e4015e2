"""The replicated JetStream control plane: a server on each of the first three machines, and the
move onto them when the third machine joins.

A NATS cluster of one or two machines keeps its documents on the first machine's single server
(``machine init``). Each of the first three machines also runs a clustered server, configured
clustered from its first start: ``init`` starts the first (its routes name only itself, so it
waits), the second ``join`` starts the second (the two form the JetStream meta group), the third
``join`` the third, and then moves the documents onto buckets replicated three times
(``ployz.control.relocation``). The single server stays up, sealed: it still tells a client that
comes with its URL where the control plane went.

Routes and clients use the machines' underlay addresses (the hosts of their WireGuard
endpoints): the control plane must answer before the overlay exists, which is built from it.
Both speak TLS, on certificates of the cluster's own CA (``.certificates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from ployz.control import ControlPlane
from ployz.control.models import Machine
from ployz.control.nats_server import NatsServerConfig
from ployz.control.nats_store import NatsStore
from ployz.control.relocation import relocate
from ployz.control.url import ca_of, ca_parameter, nats_servers, open_store, redact_url
from ployz.deploy.membership import daemons
from ployz.deploy.membership.certificates import server_tls
from ployz.deploy.membership.errors import MembershipError
from ployz.deploy.membership.local import MachineHome
from ployz.transfer.addresses import format_address, parse_address

REPLICA_PORT = 4223
"""Clients of the replicated servers; the single server keeps 4222."""
ROUTE_PORT = 6222
REPLICAS = 3
FORMING_S = 180.0
"""How long the move waits for the three servers to elect a leader and place the buckets
(tens of seconds under emulation)."""


def credentials_of(url: str) -> tuple[str, str]:
    """The user and password a NATS control URL carries (every server shares them)."""
    parts = urlsplit(nats_servers(url)[0])
    if parts.username is None or parts.password is None:
        raise MembershipError(f"the control URL {redact_url(url)} carries no NATS credentials")
    return parts.username, parts.password


def is_single_server(url: str) -> bool:
    """Whether ``url`` is a NATS control plane still on its first machine's single server."""
    return url.startswith("nats://") and len(nats_servers(url)) == 1


def replicated_url(url: str, hosts: Sequence[str]) -> str:
    """The control URL of the replicated servers on ``hosts``, with the credentials and the
    CA of ``url``."""
    user, password = credentials_of(url)
    servers = ",".join(f"{user}:{password}@{format_address(h, REPLICA_PORT)}" for h in hosts)
    ca = ca_of(url)
    return f"nats://{servers}?replicas={REPLICAS}" + (f"&ca={ca_parameter(ca)}" if ca else "")


def host_of(machine: Machine) -> str:
    if machine.endpoint is None:
        raise MembershipError(f"machine {machine.id} has no endpoint: its JetStream server "
                              "cannot be reached")
    return parse_address(machine.endpoint)[0]


def start_replica(home: MachineHome, machine_id: str, url: str, host: str,
                  route_hosts: Sequence[str]) -> str:
    """Writes this machine's clustered server's configuration (routes to ``route_hosts``,
    itself included, so that a restart finds the others) and starts it; when ``url`` names a
    CA, with TLS on the machine's server certificate, which must exist."""
    user, password = credentials_of(url)
    routes = tuple(f"nats-route://{user}:{password}@{format_address(h, ROUTE_PORT)}"
                   for h in route_hosts)
    tls = server_tls(home.nats_tls) if ca_of(url) is not None else None
    config = NatsServerConfig(server_name=machine_id, host=host, port=REPLICA_PORT,
                              store_dir=home.nats_dir / "replica", user=user, password=password,
                              cluster_port=ROUTE_PORT, routes=routes, tls=tls)
    config.write(home.replica_config)
    return daemons.start(home.replica_daemon())


def check_no_deploy_running(cp: ControlPlane) -> None:
    """The move seals the old store, failing every run writing to it: refuse while one does."""
    now = datetime.now(UTC)
    running = sorted(state.namespace for state in cp.list_namespaces()
                     if state.lock is not None and state.lock.is_held(now))
    if running:
        raise MembershipError(
            f"a deploy holds the lock of namespace(s) {', '.join(running)}: the third machine's "
            "join moves the control plane to replicated servers and must not cut a run short; "
            "join again when it has ended")


def move_to_replicas(cp: ControlPlane, machines: Sequence[Machine]) -> str:
    """Moves the control plane from its single server onto the replicated servers of
    ``machines`` (the first three), records them as its servers there, and returns their
    control URL. Run again after a move that stopped halfway, it finishes it."""
    target_url = replicated_url(cp.location, [host_of(m) for m in machines])
    source = open_store(cp.location)
    try:
        if not isinstance(source, NatsStore):
            raise MembershipError(f"{cp.url} is not a NATS control plane: nothing to replicate")
        target = NatsStore(nats_servers(target_url), replicas=REPLICAS, timeout=FORMING_S,
                           ca=ca_of(target_url))
        try:
            relocate(source, target, target_url)
            replicated = ControlPlane(target, target_url)
            replicated.set_control_servers([m.id for m in machines])
            replicated.set_server_authority(None)  # every server has its certificate now
        finally:
            target.close()
    finally:
        source.close()
    return target_url
