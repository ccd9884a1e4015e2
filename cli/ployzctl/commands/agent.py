"""``ployzctl agent``: run this machine's agent, create the key that signs requests to agents,
or call one agent method directly (for operators debugging a machine)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ployz.agent.client import AgentClient
from ployz.agent.daemon import add_arguments, config_from_args, run
from ployz.agent.errors import AgentError
from ployz.transfer.keys import BadKey, generate_private_key, load_private_key, public_key_text
from ployzctl.commands import SUMMARIES
from ployzctl.output import fail, print_json

KEY_ENV = "PLOYZ_KEY"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("agent", help=SUMMARIES["agent"])
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

    call = commands.add_parser("call", help="call one method of an agent and print its result")
    call.add_argument("--address", required=True, metavar="HOST:PORT", help="the agent")
    call.add_argument("--key", type=Path, default=os.environ.get(KEY_ENV),
                      help=f"private key file that signs the request (default ${KEY_ENV})")
    call.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                      help="how long to wait for the answer")
    call.add_argument("method", help="method name, e.g. agent.health or zfs.snapshots")
    call.add_argument("params", nargs="?", default="{}", help="parameters as a JSON object")
    call.set_defaults(func=_call)


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


def _call(args: argparse.Namespace) -> int:
    if args.key is None:
        return fail(f"no key: give --key or set ${KEY_ENV}", status=2)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        return fail(f"params are not valid JSON: {exc}", status=2)
    if not isinstance(params, dict):
        return fail("params must be a JSON object", status=2)
    try:
        key = load_private_key(args.key)
        with AgentClient(args.address, key, timeout_s=args.timeout) as client:
            print_json(client.call(args.method, params))
    except ValueError as exc:  # a bad key file or address
        return fail(str(exc), status=2)
    except AgentError as exc:
        return fail(str(exc))
    return 0
