"""``ployzctl machine join TOKEN``: a new machine becomes a member.

Every check that can refuse runs before anything is written: the token's form, the endpoint
being an address of this machine, the control plane answering, the token's signature (against
the trust the control plane holds, not the one the token claims), its expiry, and the machine id
being free. Only then is the invite consumed and the machine added (the control plane allocates
its overlay address and subnet); an addition that fails gives the invite back. The other
machines' agents see the new fact and add the peer themselves: nothing is run on them. With
NATS, each of the first three machines starts a server of the replicated JetStream cluster, and
the third moves the control plane onto them (``replication``).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ployz.control import ControlPlane, UnknownMachine
from ployz.control.models import Machine
from ployz.control.url import ca_of, redact_url
from ployz.deploy.membership import daemons, tokens
from ployz.deploy.membership.certificates import authority_of, ensure_server
from ployz.deploy.membership.errors import MembershipError
from ployz.deploy.membership.founding import Membership, with_port
from ployz.deploy.membership.gateway import start_gateway
from ployz.deploy.membership.local import (
    GATEWAY_DAEMON,
    REPLICA_DAEMON,
    MachineConfig,
    MachineHome,
)
from ployz.deploy.membership.reachability import (
    OVERLAY_S,
    connects,
    wait_for_agent,
    wait_for_control,
    wait_until,
)
from ployz.deploy.membership.replication import (
    REPLICAS,
    check_no_deploy_running,
    host_of,
    is_single_server,
    move_to_replicas,
    start_replica,
)
from ployz.net.keys import public_key_of, read_private_key
from ployz.transfer.addresses import parse_address
from ployz.transfer.keys import parse_public_key


@dataclass(frozen=True)
class JoinOptions:
    token: str
    machine_id: str
    pool: str
    endpoint: str
    home: Path
    docker_socket: str | None = None


def join_machine(options: JoinOptions) -> Membership:
    claimed = tokens.parse(options.token).token
    endpoint = with_port(options.endpoint)
    check_local_endpoint(endpoint)
    home = MachineHome(options.home)
    with wait_for_control(claimed.control) as cp:
        cluster = cp.get_cluster()
        token = tokens.verify(options.token, [parse_public_key(k) for k in cluster.trust],
                              time.time())
        if token.cluster != cluster.name:
            raise MembershipError(f"the token is for cluster {token.cluster!r}, but the control "
                                  f"plane at {redact_url(token.control)} holds {cluster.name!r}")
        forming = _completes_replicas(cp, options.machine_id)
        if forming:
            check_no_deploy_running(cp)
        machine = _add(cp, home, options.machine_id, endpoint, token.invite)
        started: dict[str, str] = {}
        control = _serve_replica(cp, home, machine, started)
        config = MachineConfig(
            id=machine.id, cluster=cluster.name, pool=options.pool, endpoint=endpoint,
            overlay_ip=machine.overlay_ip, overlay=cluster.overlay, control=control,
            trust=cluster.trust, docker_socket=options.docker_socket,
            nats=REPLICA_DAEMON in started)
        home.save(config)
        started[GATEWAY_DAEMON] = start_gateway(home, endpoint)
        agent = home.agent_daemon(config)
        started[agent.name] = daemons.start(agent)
        wait_for_agent(agent, config)
        _wait_for_overlay(cp, config)
        return Membership(cp.get_machine(machine.id), cluster, redact_url(control), started)


def _server_certificate(cp: ControlPlane, home: MachineHome, machine: Machine) -> None:
    """This machine's JetStream server certificate, signed with the CA key the control plane
    holds while the cluster forms (unless a join run before made it)."""
    ca = ca_of(cp.location)
    if ca is None or home.nats_tls.server_cert.exists():
        return
    key = cp.get_cluster().server_authority
    if key is None:
        raise MembershipError("the control plane holds no server CA key, so this machine cannot "
                              "run one of the cluster's JetStream servers: run `machine init` "
                              "again on the first machine, then join")
    ensure_server(home.nats_tls, authority_of(ca, key), machine.id, host_of(machine))


def _completes_replicas(cp: ControlPlane, machine_id: str) -> bool:
    """Whether this join makes the third machine of a cluster still on its single server."""
    others = [m for m in cp.list_machines() if m.id != machine_id]
    return is_single_server(cp.location) and len(others) == REPLICAS - 1


def _serve_replica(cp: ControlPlane, home: MachineHome, machine: Machine,
                   started: dict[str, str]) -> str:
    """Starts this machine's replicated JetStream server if it is one of the first three
    machines, moves the control plane onto the three servers when it is the third, and returns
    the control URL to keep."""
    if home.replica_config.exists() and not is_single_server(cp.location):
        started[REPLICA_DAEMON] = daemons.start(home.replica_daemon())  # a join run again
        return cp.location
    members = cp.list_machines()
    if not is_single_server(cp.location) or len(members) > REPLICAS:
        return cp.location
    _server_certificate(cp, home, machine)
    started[REPLICA_DAEMON] = start_replica(home, machine.id, cp.location, host_of(machine),
                                            [host_of(m) for m in members])
    if len(members) < REPLICAS:
        return cp.location
    return move_to_replicas(cp, members)


def check_local_endpoint(endpoint: str) -> None:
    """The endpoint's host must be an address of this machine: WireGuard listens there, and
    the other machines send to it."""
    host, _ = parse_address(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError as exc:
            raise MembershipError(f"endpoint {endpoint}: {host} is not an address of this "
                                  f"machine ({exc.strerror}); give the address the other "
                                  "machines reach it at") from exc


def _add(cp: ControlPlane, home: MachineHome, machine_id: str, endpoint: str,
         invite: str) -> Machine:
    """The machine as a member: added now, or found added by an earlier run of the same join
    (same id, same WireGuard key), in which case the invite is not needed again."""
    try:
        existing: Machine | None = cp.get_machine(machine_id)
    except UnknownMachine:
        existing = None
    own_key = (public_key_of(read_private_key(home.wireguard_key))
               if home.wireguard_key.exists() else None)
    if existing is not None and existing.wireguard_key == own_key and own_key is not None:
        return existing
    if existing is not None:
        raise MembershipError(f"machine id {machine_id!r} is already a member of the cluster "
                              f"(overlay {existing.overlay_ip}): choose another --id, or take "
                              f"the old one out first (`ployzctl machine rm {machine_id}`)")
    cp.consume_invite(invite, machine_id)
    try:
        home.prepare()
        public = public_key_of(home.wireguard_private_key())
        return cp.add_machine(machine_id, public, endpoint)
    except BaseException:
        cp.release_invite(invite, machine_id)
        raise


def _wait_for_overlay(cp: ControlPlane, config: MachineConfig) -> None:
    """Until another member's agent answers over the overlay: that proves the WireGuard path
    both ways (their agent added us as a peer, ours added them)."""
    others = [m for m in cp.list_machines() if m.id != config.id and m.wireguard_key]
    if not others:
        return
    names = ", ".join(m.id for m in others)
    wait_until(f"no other machine ({names}) answered over the overlay",
               lambda: any(connects(m.overlay_ip, config.agent_port) for m in others),
               OVERLAY_S)
