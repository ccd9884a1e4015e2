"""Waiting for what a new member depends on: the control plane, its own agent, the overlay.

Each wait ends in a :class:`MembershipError` that says what did not answer and where to look,
instead of a bare timeout: a join that cannot reach the cluster is the most common failure of
forming one (a firewall, a wrong address in the token).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from ployz.control import ControlPlane, ControlPlaneError, open_control_plane
from ployz.control.url import redact_url
from ployz.deploy.membership import daemons
from ployz.deploy.membership.daemons import Daemon
from ployz.deploy.membership.errors import MembershipError
from ployz.deploy.membership.local import MachineConfig

AGENT_START_S = 300.0
"""An agent under software emulation takes tens of seconds to import and listen."""

OVERLAY_S = 60.0
POLL_S = 0.5


def wait_for_control(url: str) -> ControlPlane:
    """The control plane at ``url``, connected; the URL's credentials stay out of the message."""
    try:
        return open_control_plane(url)
    except ControlPlaneError as exc:
        raise MembershipError(
            f"the control plane at {redact_url(url)} does not answer: {exc}") from exc


def connects(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(what: str, ready: Callable[[], bool], timeout_s: float,
               check: Callable[[], None] = lambda: None,
               detail: Callable[[], str] = lambda: "") -> None:
    """Until ``ready()``; ``check()`` raises to end the wait early; ``detail()`` is appended to
    the timeout's message (a daemon's log)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        check()
        if time.monotonic() > deadline:
            raise MembershipError(f"{what} within {timeout_s:.0f} s{detail()}")
        time.sleep(POLL_S)


def wait_for_agent(agent: Daemon, config: MachineConfig) -> None:
    """Until the agent listens on its overlay address; fails at once when it exits."""
    def log() -> str:
        return f"; its log: {daemons.log_tail(agent)}"

    def alive() -> None:
        if not daemons.running(agent):
            raise MembershipError(f"the agent exited{log()}")

    wait_until(f"the agent did not listen on {config.overlay_ip}:{config.agent_port}",
               lambda: connects(config.overlay_ip, config.agent_port), AGENT_START_S, alive, log)
