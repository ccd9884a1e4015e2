"""``ployzctl migrate preview|render-manifest|apply NAMESPACE/SERVICE --to MACHINE``.

``preview`` prints the plan and changes nothing; ``render-manifest`` prints the deploy manifest
``apply`` submits (TOML that ``ployzctl deploy preview -f -`` reads); ``apply`` moves the service
and its volumes, printing phases and transfers as they happen (one JSON event per line with
``--json``, progress events included; on a terminal a progress bar for the volume being sent).
See the operator guide for what each phase does and how to recover.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ployz.deploy.manifest import render
from ployz.deploy.migration import (
    Event,
    MalformedServiceRef,
    MigrationPlan,
    ServiceRef,
    TargetWithoutRoom,
    migrate,
    parse_service_ref,
    plan_migration,
)
from ployz.deploy.migration.plan import moved_manifest
from ployz.transfer.units import format_size
from ployzctl.commands import SUMMARIES
from ployzctl.config import (
    add_agent_arguments,
    add_control_argument,
    agent_directory,
    open_control,
    reported,
)
from ployzctl.output import fail, print_json, print_table
from ployzctl.progress_bar import ProgressBar


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("migrate", help=SUMMARIES["migrate"])
    commands = parser.add_subparsers(dest="migrate_command", required=True, metavar="SUBCOMMAND")
    for name, func, help_text in (
        ("preview", _preview, "print the migration plan; changes nothing"),
        ("render-manifest", _render, "print the deploy manifest that apply submits"),
        ("apply", _apply, "migrate: pre-copy, fence, final send, start, commit, cleanup"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("ref", type=_ref, metavar="NAMESPACE/SERVICE")
        command.add_argument("--to", required=True, metavar="MACHINE", help="target machine id")
        command.add_argument("--keep-source", action="store_true",
                             help="apply: keep the source dataset after the commit (default: "
                                  "destroyed once the target has the data and runs)")
        add_control_argument(command)
        add_agent_arguments(command)
        command.add_argument("--json", action="store_true",
                             help="print JSON (apply: one event per line)")
        command.set_defaults(func=func)


def _ref(text: str) -> ServiceRef:
    try:
        return parse_service_ref(text)
    except MalformedServiceRef as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@reported
def _preview(args: argparse.Namespace) -> int:
    with open_control(args) as cp, agent_directory(args) as agents:
        plan = plan_migration(cp, agents, args.ref, args.to)
    if args.json:
        print_json(plan.to_json())
    else:
        _print_plan(plan)
    if not plan.room.has_room:
        return fail(str(TargetWithoutRoom(plan.target, plan.room.needed, plan.room.free,
                                          plan.room.margin)))
    return 0


@reported
def _render(args: argparse.Namespace) -> int:
    with open_control(args) as cp:
        _, manifest = moved_manifest(cp, args.ref, args.to)
    if args.json:
        print_json(manifest.model_dump(mode="json", exclude_none=True, exclude_defaults=True))
    else:
        sys.stdout.write(render(manifest))
    return 0


@reported
def _apply(args: argparse.Namespace) -> int:
    emit = print_json if args.json else EventPrinter(sys.stdout)
    with open_control(args) as cp, agent_directory(args) as agents:
        migrate(cp, agents, args.ref, args.to, keep_source=args.keep_source, emit=emit)
    return 0


def _print_plan(plan: MigrationPlan) -> None:
    print(f"migrate preview of {plan.ref}: {plan.source} -> {plan.target} "
          f"(manifest {plan.digest}, image {plan.image})")
    if plan.volumes:
        print_table(("VOLUME", "SIZE", "INITIAL SEND", "FINAL SEND", "SOURCE DATASET",
                     "TARGET DATASET"),
                    [(v.name, format_size(v.size), format_size(v.initial_send),
                      f"<= {format_size(v.final_send)}", v.source_dataset, v.target_dataset)
                     for v in plan.volumes])
        room = plan.room
        verdict = "room OK" if room.has_room else "NOT ENOUGH ROOM"
        print(f"target pool {room.pool} on {room.machine}: {format_size(room.free)} free, needs "
              f"{format_size(room.needed)} (data + {room.margin:.0%} margin): {verdict}")
    else:
        print("no volume: a plain container move")
    print("phases: " + " -> ".join(plan.to_json()["phases"]))
    volumes = "".join(f"; volume {v.name} on {plan.target}" for v in plan.volumes)
    print(f"after: service {plan.ref.service} on {plan.target}{volumes}")


class EventPrinter:
    """Migration events for a person. Progress events redraw one bar in place when ``stream``
    is a terminal and are dropped otherwise (a log would fill with carriage returns; scripts
    that want them use ``--json``); every other event is a line of its own, after finishing
    the bar's line. ``prefix`` labels an event's line (``machine drain`` names the service)."""

    def __init__(self, stream: TextIO, prefix: Callable[[Event], str] = lambda event: "") -> None:
        self.stream = stream
        self.prefix = prefix
        self.bar = ProgressBar(stream) if stream.isatty() else None

    def __call__(self, event: Event) -> None:
        if event["event"] == "progress":
            if self.bar is not None:
                total = event.get("total")
                self.bar.draw(event["bytes"] / total if total else None, event["bytes"],
                              event["rate"], event.get("eta_s"),
                              label=f"{self.prefix(event)}{event['volume']} {event['kind']} ")
            return
        if self.bar is not None:
            self.bar.end()
        print(self.prefix(event) + describe_event(event), file=self.stream, flush=True)


def describe_event(event: Event) -> str:
    """One line for a person: a migration event as the terminal shows it."""
    kind = event["event"]
    if kind == "phase":
        return f"== {event['phase']}"
    if kind == "transfer":
        return _describe_transfer(event)
    if kind == "start":
        plan = event["plan"]
        return (f"migrating {plan['service']} from {plan['source']} to {plan['target']} "
                f"(deploy {event['deploy_id']})")
    if kind == "committed":
        return f"committed deploy {event['deploy_id']} as #{event['commit']}"
    if kind == "done":
        cutover = event.get("cutover_s") or {}
        window = f"; cutover {cutover['total']:.1f} s" if "total" in cutover else ""
        return f"done: {event['deploy_id']} now runs on {event['target']}{window}"
    if kind in ("recover", "rolled-back", "aborting", "aborted"):
        return f"{kind}: " + json.dumps({k: v for k, v in event.items() if k != "event"})
    return str(event.get("message", event))


def _describe_transfer(event: dict[str, Any]) -> str:
    what = f"{event['kind']} send of {event['volume']} (round {event['round']})"
    if event["state"] == "started":
        return f"   {what}: about {format_size(event['estimate'])}"
    rate = event["bytes"] / event["seconds"] if event["seconds"] else 0.0
    return (f"   {what}: {format_size(event['bytes'])} in {event['seconds']:.1f} s "
            f"({format_size(int(rate))}/s, {event['resumes']} resumes, codec {event['codec']})")
