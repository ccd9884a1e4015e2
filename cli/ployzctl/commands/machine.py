"""``ployzctl machine ls``: the cluster's machines as the control plane knows them."""

from __future__ import annotations

import argparse

from ployz.deploy.inspect import machine_rows
from ployz.deploy.sizes import format_size
from ployzctl.config import add_control_argument, open_control, reported
from ployzctl.output import print_json, print_table

_COLUMNS = ("ID", "LIFECYCLE", "LIVENESS", "OVERLAY IP", "POOL FREE", "POOL USED", "CONTAINERS",
            "LAST HEARTBEAT")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("machine", help="the cluster's machines")
    commands = parser.add_subparsers(dest="machine_command", required=True, metavar="SUBCOMMAND")
    ls = commands.add_parser("ls", help="list machines: lifecycle, address, pool, heartbeat")
    add_control_argument(ls)
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=_ls)


@reported
def _ls(args: argparse.Namespace) -> int:
    with open_control(args) as cp:
        rows = machine_rows(cp)
    if args.json:
        print_json(rows)
        return 0
    print_table(_COLUMNS, [
        (r["id"], r["lifecycle"], r["liveness"], r["overlay_ip"], format_size(r["pool_free"]),
         format_size(r["pool_used"]), r["containers"], r["last_heartbeat"] or "never")
        for r in rows
    ])
    return 0
