"""``ployzctl migrate preview|render-manifest|apply NAMESPACE/SERVICE --to MACHINE``.

``preview`` prints the plan and changes nothing; ``render-manifest`` prints the deploy manifest
``apply`` submits (TOML that ``ployzctl deploy preview -f -`` reads); ``apply`` moves the service
and its volumes, printing phases and transfers as they happen (one JSON event per line with
``--json``, progress events included; on a terminal a progress bar for the volume being sent).
See the operator guide for what each phase does and how to recover.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ployz.deploy.manifest import render
from ployz.deploy.migration.apply import migrate
from ployz.deploy.migration.errors import MalformedServiceRef, TargetWithoutRoom
from ployz.deploy.migration.estimate import DEFAULT_BUDGET_SLACK_S, Prediction
from ployz.deploy.migration.plan import MigrationPlan, moved_manifest, plan_migration
from ployz.deploy.migration.ref import ServiceRef, parse_service_ref
from ployz.deploy.migration.saved_plan import load_plan, write_plan
from ployz.transfer.units import format_size
from ployzctl.commands import SUMMARIES, rate
from ployzctl.config import (
    add_agent_arguments,
    add_control_argument,
    agent_directory,
    open_control,
    reported,
)
from ployzctl.events import EventPrinter, print_event
from ployzctl.output import fail, print_json, print_table


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
        command.add_argument("--out", type=Path, metavar="PLAN",
                             help="preview: also write the plan to this file, for apply --plan")
        command.add_argument("--plan", metavar="PLAN",
                             help="apply: execute exactly this plan (from preview --out); "
                                  "refused, changing nothing, when its facts no longer hold")
        command.add_argument("--bwlimit", type=rate, default=0.0, metavar="RATE",
                             help="apply: bytes per second the move's sends share (e.g. 50M; "
                                  "default unlimited)")
        command.add_argument("--max-downtime", type=_seconds, metavar="SECONDS",
                             help="preview, apply: the cutover the pre-copy converges to; "
                                  "apply refuses before its fence when it cannot (default: "
                                  "the service's measured stop, start and readiness and the "
                                  f"link's set-up per send, plus {DEFAULT_BUDGET_SLACK_S:g} s)")
        add_control_argument(command)
        add_agent_arguments(command)
        command.add_argument("--json", action="store_true",
                             help="print JSON (apply: one event per line)")
        command.set_defaults(func=func)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive number of seconds")
    return value


def _ref(text: str) -> ServiceRef:
    try:
        return parse_service_ref(text)
    except MalformedServiceRef as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@reported
def _preview(args: argparse.Namespace) -> int:
    with open_control(args) as cp, agent_directory(args) as agents:
        plan = plan_migration(cp, agents, args.ref, args.to, args.max_downtime)
    if args.out is not None:
        write_plan(plan, args.out)
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
    emit = print_event if args.json else EventPrinter(sys.stdout)
    expected = load_plan(args.plan) if args.plan is not None else None
    with open_control(args) as cp, agent_directory(args) as agents:
        migrate(cp, agents, args.ref, args.to, keep_source=args.keep_source,
                max_downtime_s=args.max_downtime, expected=expected, bwlimit=args.bwlimit,
                emit=emit)
    return 0


def _print_plan(plan: MigrationPlan) -> None:
    print(f"migrate preview of {plan.ref}: {plan.source} -> {plan.target} "
          f"(manifest {plan.digest}, image {plan.image})")
    if plan.volumes:
        print_table(("VOLUME", "SIZE", "INITIAL SEND", "SOURCE DATASET", "TARGET DATASET"),
                    [(v.name, format_size(v.size), format_size(v.initial_send),
                      v.source_dataset, v.target_dataset)
                     for v in plan.volumes])
        room = plan.room
        verdict = "room OK" if room.has_room else "NOT ENOUGH ROOM"
        print(f"target pool {room.pool} on {room.machine}: {format_size(room.free)} free, needs "
              f"{format_size(room.needed)} (data + {room.margin:.0%} margin): {verdict}")
    else:
        print("no volume: a plain container move")
    print("phases: " + " -> ".join(plan.to_json()["phases"]))
    _print_estimate(plan.prediction)
    volumes = "".join(f"; volume {v.name} on {plan.target}" for v in plan.volumes)
    print(f"after: service {plan.ref.service} on {plan.target}{volumes}")


def _print_estimate(prediction: Prediction) -> None:
    e = prediction.estimate

    def size(value: float | None) -> str:
        return "unknown" if value is None else format_size(int(value))

    if e.seconds is None or e.window_seconds is None:
        took = ("its time and downtime unknown until a migration in this cluster measured a "
                "service's stop, start and readiness")
    else:
        took = f"about {e.seconds:.1f} s in all, of which {e.window_seconds:.1f} s of downtime"
    print(f"expected: {size(e.initial_bytes)} first, then a final send of "
          f"{size(e.final_bytes)}; {took} (budget {prediction.budget_s:g} s)")
    print(f"  from: the service writing {size(e.write_bytes_per_s)}/s, the link carrying "
          f"{size(e.link_bytes_per_s)}/s (link {prediction.basis['link']}, cutover costs "
          f"{prediction.basis['cutover_costs']})")
    if prediction.converges is False:
        print(f"  pre-copy cannot converge to {prediction.budget_s:g} s of downtime: apply "
              "would refuse before its fence")
