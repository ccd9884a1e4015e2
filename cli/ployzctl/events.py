"""Events of a deploy run (a deploy, a migration, a drain) as a person reads them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO

from ployz.deploy.events import Event
from ployz.transfer.units import format_size
from ployzctl.progress_bar import ProgressBar


class EventPrinter:
    """Run events for a person. Progress events redraw one bar in place when ``stream``
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
    """One line for a person: a run event as the terminal shows it."""
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
