"""Events of a deploy run (a deploy, a migration, a drain) as a person reads them."""

from __future__ import annotations

import json
from typing import TextIO

from ployz.deploy.events import (
    Aborted,
    Aborting,
    Done,
    Draining,
    Event,
    Phase,
    Recover,
    RolledBack,
    RoutesConfirmed,
    RunCommitted,
    Started,
    Step,
    TransferDone,
    TransferInterrupted,
    TransferProgress,
    TransferStarted,
)
from ployz.transfer.units import format_size
from ployzctl.output import print_json
from ployzctl.progress_bar import ProgressBar


class EventPrinter:
    """Run events for a person. Progress events redraw one bar in place when ``stream``
    is a terminal and are dropped otherwise (a log would fill with carriage returns; scripts
    that want them use ``--json``); every other event is a line of its own, after finishing
    the bar's line. A drain's events are labelled with the service they belong to."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar = ProgressBar(stream) if stream.isatty() else None

    def __call__(self, event: Event) -> None:
        prefix = f"[{event.service}] " if event.service is not None else ""
        if isinstance(event, TransferProgress):
            if self.bar is not None:
                self.bar.draw(event.bytes / event.total if event.total else None, event.bytes,
                              event.rate, event.eta_s,
                              label=f"{prefix}{event.volume} {event.kind} ")
            return
        if self.bar is not None:
            self.bar.end()
        print(prefix + describe_event(event), file=self.stream, flush=True)


def print_event(event: Event) -> None:
    """One event as a line of JSON, for ``--json``."""
    print_json(event.to_json())


def describe_event(event: Event) -> str:
    """One line for a person: a run event as the terminal shows it."""
    if isinstance(event, Phase):
        return f"== {event.phase}"
    if isinstance(event, TransferStarted):
        return f"   {_transfer(event)}: about {format_size(event.estimate)}"
    if isinstance(event, TransferDone):
        rate = event.bytes / event.seconds if event.seconds else 0.0
        return (f"   {_transfer(event)}: {format_size(event.bytes)} in {event.seconds:.1f} s "
                f"({format_size(int(rate))}/s, {event.resumes} resumes, codec {event.codec})")
    if isinstance(event, TransferInterrupted):
        return f"   {_transfer(event)} interrupted ({event.reason}): resuming"
    if isinstance(event, Started):
        plan = event.plan
        return (f"migrating {plan['service']} from {plan['source']} to {plan['target']} "
                f"(deploy {event.deploy_id})")
    if isinstance(event, RunCommitted):
        return f"committed deploy {event.deploy_id} as #{event.commit}"
    if isinstance(event, RoutesConfirmed):
        confirmed = ", ".join(event.confirmed) or "no machine"
        line = (f"routing of commit #{event.version} applied by {confirmed} "
                f"({event.seconds:.1f} s)")
        if event.missing:
            line += (f"; NOT confirmed by {', '.join(event.missing)} in time: they still route "
                     f"{event.namespace} as before until their agents apply it")
        return line
    if isinstance(event, Done):
        total = event.cutover_s.get("total")
        window = f"; cutover {total:.1f} s" if total is not None else ""
        return f"done: {event.deploy_id} now runs on {event.target}{window}"
    if isinstance(event, Step):
        return event.message
    if isinstance(event, Draining):
        return f"moves to {event.target}"
    if isinstance(event, Recover):
        return f"settling the unfinished run {event.deploy_id}: {event.action} ({event.step})"
    if isinstance(event, Aborting):
        return f"aborting at {event.step}: {event.error}"
    if isinstance(event, RolledBack | Aborted):
        return _undone(event)
    fields = {k: v for k, v in event.to_json().items() if k not in ("event", "service")}
    return f"{event.KIND}: " + json.dumps(fields)


def _undone(event: RolledBack | Aborted) -> str:
    """What a failed run put back and what it could not: the operator's next step."""
    head = (f"aborted {event.deploy_id} at {event.step}: {event.error}"
            if isinstance(event, Aborted) else f"rolled back {event.deploy_id}")
    undone = "; ".join(event.undone) or "nothing"
    line = f"{head}; undone: {undone}"
    if event.left:
        line += f"; NOT undone (the next run of the namespace retries): {'; '.join(event.left)}"
    return line


def _transfer(event: TransferStarted | TransferDone | TransferInterrupted) -> str:
    return f"{event.kind} send of {event.volume} (round {event.round})"
