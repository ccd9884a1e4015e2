"""``ployzctl machine ls|drain|activate`` (and init|invite|join|rm, see
:mod:`ployzctl.commands.membership`): the cluster's machines as the control plane knows them, and
taking one out of service (draining it, optionally moving its services away) or back."""

from __future__ import annotations

import argparse
import sys

from ployz.deploy.inspect import machine_rows
from ployz.transfer.units import format_size
from ployzctl.commands import SUMMARIES, membership, rate
from ployzctl.config import (
    add_agent_arguments,
    add_control_argument,
    agent_directory,
    open_control,
    reported,
)
from ployzctl.events import EventPrinter, print_event
from ployzctl.output import print_json, print_table

_COLUMNS = ("ID", "LIFECYCLE", "LIVENESS", "OVERLAY IP", "SUBNET", "ENDPOINT", "POOL FREE",
            "POOL USED", "CONTAINERS", "LAST HEARTBEAT")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("machine", help=SUMMARIES["machine"])
    commands = parser.add_subparsers(dest="machine_command", required=True, metavar="SUBCOMMAND")
    membership.register(commands)
    ls = commands.add_parser("ls", help="list machines: lifecycle, address, pool, heartbeat")
    add_control_argument(ls)
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=_ls)

    drain_parser = commands.add_parser(
        "drain", help="mark a machine draining (nothing new is placed on it); with --migrate "
                      "move every service on it to other active machines")
    drain_parser.add_argument("machine", metavar="MACHINE")
    drain_parser.add_argument("--migrate", action="store_true",
                              help="move the machine's services away, each to the active "
                                   "machine with the most free pool space")
    drain_parser.add_argument("--keep-source", action="store_true",
                              help="keep the source datasets after each move")
    drain_parser.add_argument("--parallel", type=int, default=1, metavar="N",
                              help="with --migrate: move up to N services at once (default 1)")
    drain_parser.add_argument("--bwlimit", type=rate, default=0.0, metavar="RATE",
                              help="with --migrate: bytes per second all the moves share "
                                   "(e.g. 50M; default unlimited)")
    add_control_argument(drain_parser)
    add_agent_arguments(drain_parser)
    drain_parser.add_argument("--json", action="store_true",
                              help="one JSON event per line, then the results")
    drain_parser.set_defaults(func=_drain)

    activate = commands.add_parser("activate", help="return a drained machine to service")
    activate.add_argument("machine", metavar="MACHINE")
    add_control_argument(activate)
    activate.add_argument("--json", action="store_true", help="print the machine as JSON")
    activate.set_defaults(func=_activate)


@reported
def _ls(args: argparse.Namespace) -> int:
    with open_control(args) as cp:
        rows = machine_rows(cp)
    if args.json:
        print_json(rows)
        return 0
    print_table(_COLUMNS, [
        (r["id"], r["lifecycle"], r["liveness"], r["overlay_ip"], r["subnet"],
         r["endpoint"] or "-", format_size(r["pool_free"]),
         format_size(r["pool_used"]), r["containers"], r["last_heartbeat"] or "never")
        for r in rows
    ])
    return 0


@reported
def _drain(args: argparse.Namespace) -> int:
    # Imported here: draining brings in the migration orchestrator and the agent client, which
    # `machine ls`, `invite` or `rm` would otherwise load too, at seconds each under emulation.
    from ployz.deploy.drain import drain

    emit = print_event if args.json else EventPrinter(sys.stdout)
    with open_control(args) as cp, agent_directory(args) as agents:
        outcomes = drain(cp, agents, args.machine, migrate_services=args.migrate,
                         keep_source=args.keep_source, parallel=args.parallel,
                         bwlimit=args.bwlimit, emit=emit)
    if args.json:
        print_json({"event": "drained", "machine": args.machine,
                    "results": [o.to_json() for o in outcomes]})
    elif outcomes:
        print_table(("SERVICE", "TARGET", "RESULT", "ERROR"),
                    [(o.service, o.target or "-", o.status, o.error or "") for o in outcomes])
    return 1 if any(o.status == "failed" for o in outcomes) else 0


@reported
def _activate(args: argparse.Namespace) -> int:
    with open_control(args) as cp:
        machine = cp.set_lifecycle(args.machine, "active")
    if args.json:
        print_json(machine.model_dump(mode="json"))
    else:
        print(f"{machine.id} is active")
    return 0
