"""``ployzctl deploy -f FILE`` and ``ployzctl deploy preview -f FILE``.

``preview`` prints the plan and changes nothing (no lock, no write, no agent call); ``deploy``
executes it and prints each step, then the commit. ``-f -`` reads the manifest from standard
input, so ``ployzctl migrate render-manifest ... | ployzctl deploy preview -f -`` works.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys

from ployz.deploy.apply import deploy
from ployz.deploy.manifest import load_manifest
from ployz.deploy.plan import DeployPlan, ServiceAction, VolumeAction, make_plan
from ployz.transfer.units import format_size
from ployzctl.commands import SUMMARIES
from ployzctl.config import (
    ConfigError,
    add_agent_arguments,
    add_control_argument,
    agent_directory,
    open_control,
    reported,
)
from ployzctl.events import EventPrinter
from ployzctl.output import print_json, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("deploy", help=SUMMARIES["deploy"])
    _add_common(parser)
    add_agent_arguments(parser)
    parser.set_defaults(func=_deploy)
    commands = parser.add_subparsers(dest="deploy_command", metavar="SUBCOMMAND")
    preview = commands.add_parser("preview", help="print what the deploy would change")
    _add_common(preview)
    preview.set_defaults(func=_preview)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", metavar="FILE",
                        help="the manifest, TOML or JSON ('-' reads standard input)")
    add_control_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def _manifest_path(args: argparse.Namespace) -> str:
    if args.file is None:
        raise ConfigError("deploy: -f FILE is required")
    path: str = args.file
    return path


@reported
def _preview(args: argparse.Namespace) -> int:
    manifest = load_manifest(_manifest_path(args))
    with open_control(args) as cp:
        plan = make_plan(manifest, cp)
    if args.json:
        print_json(plan.to_json())
    else:
        print_plan(plan)
    return 0


@reported
def _deploy(args: argparse.Namespace) -> int:
    manifest = load_manifest(_manifest_path(args))
    holder = f"{getpass.getuser()}@{socket.gethostname()}"
    # With --json, stdout carries only the result; progress goes to stderr.
    stream = sys.stderr if args.json else sys.stdout
    with open_control(args) as cp, agent_directory(args) as agents:
        result = deploy(cp, manifest, agents, holder=holder, emit=EventPrinter(stream))
    if args.json:
        print_json(result.to_json())
    elif result.commit_seq is None:
        print(f"namespace {manifest.namespace} is already as the manifest says")
    return 0


def print_plan(plan: DeployPlan) -> None:
    print(f"deploy preview of namespace {plan.namespace} (manifest {plan.digest})")
    rows: list[tuple[str, str, str, str, str]] = [
        ("volume", a.kind, a.name, _where(a.source, a.machine),
         f"quota {format_size(a.quota)}" + (f", dataset {a.dataset}" if a.dataset else ""))
        for a in plan.volumes
    ]
    rows += [
        ("service", a.kind, a.name, _where(a.previous_machine, a.machine),
         f"image {a.image}" + (f" ({', '.join(a.changes)} changed)" if a.changes else ""))
        for a in plan.services
    ]
    print_table(("WHAT", "ACTION", "NAME", "MACHINE", "DETAIL"), rows)
    for check in plan.capacity:
        print(f"pool of {check.machine}: {format_size(check.pool_free)} free, new volumes "
              f"reserve {format_size(check.needed)}")
    if plan.retained_volumes:
        print(f"kept (not in the manifest, never destroyed by a deploy): "
              f"{', '.join(plan.retained_volumes)}")
    if plan.moves:
        print("moves volume data: run `ployzctl migrate apply` to execute this plan")
    actions: tuple[VolumeAction | ServiceAction, ...] = (*plan.volumes, *plan.services)
    count = sum(a.kind != "keep" for a in actions)
    print(f"{count} change(s)" if count else "nothing to change")


def _where(before: str | None, after: str | None) -> str:
    if before and after and before != after:
        return f"{before} -> {after}"
    return after or f"{before} (removed)"
