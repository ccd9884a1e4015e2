"""``ployzctl agent``: run this machine's agent, or create the key that signs requests to agents."""

from __future__ import annotations

import argparse
from pathlib import Path

from ployz.agent.daemon import add_arguments, config_from_args, run
from ployz.agent.keys import BadKey, generate_private_key, public_key_text
from ployzctl.output import fail, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("agent", help="the machine agent")
    commands = parser.add_subparsers(dest="agent_command", required=True, metavar="SUBCOMMAND")

    run_parser = commands.add_parser("run", help="run the agent of this machine (as ployzd)")
    add_arguments(run_parser)
    run_parser.set_defaults(func=_run)

    keygen = commands.add_parser(
        "keygen", help="create an operator key; prints the public key for agents' --trust"
    )
    keygen.add_argument("--out", required=True, type=Path, help="private key file to create")
    keygen.add_argument("--json", action="store_true", help="print JSON")
    keygen.set_defaults(func=_keygen)


def _run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        return fail(str(exc), status=2)
    return run(config)


def _keygen(args: argparse.Namespace) -> int:
    try:
        key = generate_private_key(args.out)
    except (BadKey, OSError) as exc:
        return fail(str(exc))
    public = public_key_text(key.public_key())
    if args.json:
        print_json({"private_key_file": str(args.out), "public_key": public})
    else:
        print(public)
    return 0
