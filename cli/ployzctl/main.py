"""ployzctl: deploy services with ZFS volumes and move them between machines.

The parser is built from one module per command group (``ployzctl.commands.<group>``). Only the
group a command line names is imported (all of them when it names none, for ``--help``): the
groups pull in the Docker SDK, pydantic, NATS and the native modules between them, and on a
slow machine importing them all costs seconds on every command."""

from __future__ import annotations

import argparse
import importlib
import sys

from ployzctl.commands import SUMMARIES


def build_parser(group: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``group`` registered in full (every group when None); each group module
    exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking
    the parsed namespace and returning the exit status)."""
    parser = argparse.ArgumentParser(prog="ployzctl", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in SUMMARIES.items():
        if group in (None, name):
            importlib.import_module(f"ployzctl.commands.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    named = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(named if named in SUMMARIES else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("ployzctl: interrupted", file=sys.stderr)
        return 130
