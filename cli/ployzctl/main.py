"""ployzctl: deploy services with ZFS volumes and move them between machines.

The parser is built from one module per command group (``ployzctl.commands.<group>``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# One module per command group under ployzctl.commands; each exposes ``register(subparsers)``
# which adds its parser and sets ``func`` (a callable taking the parsed namespace and returning
# the exit status).
COMMAND_GROUPS: list[str] = ["agent", "deploy", "machine", "migrate", "service", "transfer"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ployzctl", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_GROUPS:
        importlib.import_module(f"ployzctl.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("ployzctl: interrupted", file=sys.stderr)
        return 130
