"""``ployzctl machine init|invite|join|rm``: forming a cluster and taking machines out of it.

Registered into the ``machine`` group by :mod:`ployzctl.commands.machine`; kept apart because
these commands run on the machine itself (keys, daemons, the local home) while the others only
read and write the control plane.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ployz.control.url import redact_url
from ployz.deploy.durations import parse_duration
from ployz.deploy.membership.founding import InitOptions, Membership, init_machine, with_port
from ployz.deploy.membership.invitation import DEFAULT_TTL_S, invite
from ployz.deploy.membership.joining import JoinOptions, join_machine
from ployz.deploy.membership.local import HOME_ENV, machine_home
from ployz.deploy.membership.tokens import TokenError
from ployzctl.config import (
    ConfigError,
    add_agent_arguments,
    add_control_argument,
    control_url,
    open_control,
    operator_key,
    reported,
)
from ployzctl.output import print_json


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = commands.add_parser("init", help="create the cluster on its first machine")
    init.add_argument("machine", metavar="MACHINE", help="this machine's id")
    _add_member_arguments(init)
    init.add_argument("--control", choices=("sqlite", "nats"), default="sqlite",
                      help="the control plane: an embedded SQLite file (one machine, or "
                           "machines sharing its file system), or a NATS JetStream server "
                           "run on this machine (default sqlite)")
    init.add_argument("--cluster", default="ployz", metavar="NAME",
                      help="the cluster's name (default ployz)")
    init.set_defaults(func=_init)

    invite_parser = commands.add_parser("invite", help="print a single-use join token")
    invite_parser.add_argument("--ttl", default="1h", metavar="DURATION",
                               help="how long the token can be used (default 1h; e.g. 15m, 2h)")
    add_control_argument(invite_parser)
    add_agent_arguments(invite_parser)
    invite_parser.add_argument("--json", action="store_true",
                               help="print {\"token\": ..., \"expires_in\": seconds}")
    invite_parser.set_defaults(func=_invite)

    join = commands.add_parser("join", help="make this machine a member, with a join token")
    join.add_argument("token", metavar="TOKEN", help="from `ployzctl machine invite`")
    join.add_argument("--id", required=True, metavar="MACHINE", help="this machine's id")
    _add_member_arguments(join)
    join.set_defaults(func=_join)

    rm = commands.add_parser("rm", help="remove a drained machine from the cluster")
    rm.add_argument("machine", metavar="MACHINE")
    rm.add_argument("--force", action="store_true",
                    help="remove it even if it is not drained or still holds services or "
                         "volumes (a dead machine); what it held is listed")
    add_control_argument(rm)
    rm.add_argument("--json", action="store_true", help="print the removal as JSON")
    rm.set_defaults(func=_rm)


def _add_member_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="the ZFS pool this machine's volumes use")
    parser.add_argument("--endpoint", required=True, metavar="HOST[:PORT]",
                        help="where the other machines reach this one's WireGuard (UDP, "
                             "port 51820 by default)")
    parser.add_argument("--home", type=Path, metavar="DIR",
                        help=f"the machine's ployz directory (default ${HOME_ENV} or "
                             "/var/lib/ployz)")
    parser.add_argument("--docker-socket", metavar="PATH",
                        help="the Docker daemon's socket (default /var/run/docker.sock)")
    parser.add_argument("--json", action="store_true", help="print the membership as JSON")


@reported
def _init(args: argparse.Namespace) -> int:
    membership = init_machine(InitOptions(
        machine_id=args.machine, pool=args.pool, endpoint=_endpoint(args), control=args.control,
        home=machine_home(args.home), cluster=args.cluster, docker_socket=args.docker_socket))
    _print_membership(args, membership, "created cluster")
    return 0


@reported
def _join(args: argparse.Namespace) -> int:
    try:
        membership = join_machine(JoinOptions(
            token=args.token, machine_id=args.id, pool=args.pool, endpoint=_endpoint(args),
            home=machine_home(args.home), docker_socket=args.docker_socket))
    except TokenError as exc:
        raise ConfigError(str(exc)) from exc
    _print_membership(args, membership, "joined cluster")
    return 0


@reported
def _invite(args: argparse.Namespace) -> int:
    try:
        ttl_s = parse_duration(args.ttl) if args.ttl else DEFAULT_TTL_S
    except ValueError as exc:
        raise ConfigError(f"--ttl: {exc}") from exc
    url = control_url(args)
    with open_control(args) as cp:
        token = invite(cp, operator_key(args), url, ttl_s)
    if args.json:
        print_json({"token": token, "expires_in": ttl_s, "control": redact_url(url)})
    else:
        print(token)
    return 0


@reported
def _rm(args: argparse.Namespace) -> int:
    with open_control(args) as cp:
        removal = cp.remove_machine(args.machine, force=args.force)
    if args.json:
        print_json({"removed": removal.machine.model_dump(mode="json"),
                    "orphans": list(removal.orphans)})
        return 0
    print(f"{removal.machine.id} removed; its WireGuard peer leaves every other machine")
    for orphan in removal.orphans:
        print(f"  left without a machine: {orphan}")
    return 0


def _endpoint(args: argparse.Namespace) -> str:
    try:
        return with_port(args.endpoint)
    except ValueError as exc:
        raise ConfigError(f"--endpoint: {exc}") from exc


def _print_membership(args: argparse.Namespace, membership: Membership, verb: str) -> None:
    if args.json:
        print_json(membership.to_json())
        return
    machine = membership.machine
    print(f"{verb} {membership.cluster.name!r}: machine {machine.id}, overlay "
          f"{machine.overlay_ip} ({membership.cluster.overlay}), subnet {machine.subnet}, "
          f"endpoint {machine.endpoint}")
    print(f"control plane {membership.control}; "
          + ", ".join(f"{name} ({how})" for name, how in membership.started.items()))
