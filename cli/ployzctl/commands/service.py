"""``ployzctl service ls``: deployed services, where they run, their stable address (answered
by every machine's DNS as ``<service>.<namespace>.ployz.internal``), their gateway host and
the volumes they mount."""

from __future__ import annotations

import argparse

from ployz.deploy.inspect import service_rows
from ployzctl.commands import SUMMARIES
from ployzctl.config import add_control_argument, open_control, reported
from ployzctl.output import print_json, print_table

_COLUMNS = ("NAMESPACE", "SERVICE", "MACHINE", "ADDRESS", "HTTP HOST", "IMAGE", "VOLUMES",
            "COMMIT")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("service", help=SUMMARIES["service"])
    commands = parser.add_subparsers(dest="service_command", required=True, metavar="SUBCOMMAND")
    ls = commands.add_parser("ls", help="list services with their machine and volumes")
    add_control_argument(ls)
    ls.add_argument("--namespace", "-n", help="only this namespace")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=_ls)


@reported
def _ls(args: argparse.Namespace) -> int:
    with open_control(args) as cp:
        rows = service_rows(cp, args.namespace)
    if args.json:
        print_json(rows)
        return 0
    print_table(_COLUMNS, [
        (r["namespace"], r["name"], r["machine"], r["address"] or "-", r["http_host"] or "-",
         r["image"],
         ", ".join(f"{v['name']}:{v['path']}" for v in r["volumes"]) or "-", r["commit"])
        for r in rows
    ])
    return 0
