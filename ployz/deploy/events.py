"""Progress of a deploy run (a plain deploy, a migration, a drain) as events: plain dicts with an
``event`` key, printed as they happen (one JSON object per line with ``--json``). A script can
act on a phase boundary by reading ``{"event": "phase", "phase": ...}`` lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Emit = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default listener."""


def step(message: str) -> Event:
    """A step done, for a person to read."""
    return {"event": "step", "message": message}
