"""How ``ployzctl`` finds the cluster (the control plane and the operator's signing key), and
how the commands that use it report its errors.

- control plane: ``--control URL``, else ``$PLOYZ_CONTROL``, else the membership of the machine
  ployzctl runs on (``machine init``/``join`` saved it in the machine's home), else
  ``$PLOYZ_CONTROL_URL`` and the built-in default (see :mod:`ployz.control.url`);
- operator key: ``--key PATH``, else ``$PLOYZ_KEY``, else the key ``machine init`` made in the
  machine's home (needed only by commands that talk to agents or sign join tokens);
- agent port: ``--agent-port``, else ``$PLOYZ_AGENT_PORT``, else 7070.

A SQLite control plane must already exist: a mistyped path must not silently create an empty
cluster that a read command then reports as having no machines.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.errors import AgentError
from ployz.control import ControlPlane, ControlPlaneError, control_plane_url, open_control_plane
from ployz.deploy.agents import DEFAULT_AGENT_PORT, ROUTE_WAIT_S, AgentDirectory
from ployz.deploy.errors import DeployError, ManifestError
from ployz.deploy.membership.local import MachineHome, machine_home
from ployz.transfer.keys import BadKey, load_private_key
from ployzctl.output import fail, print_json

CONTROL_ENV = "PLOYZ_CONTROL"
KEY_ENV = "PLOYZ_KEY"
AGENT_PORT_ENV = "PLOYZ_AGENT_PORT"
ROUTE_WAIT_ENV = "PLOYZ_ROUTE_WAIT"


class ConfigError(Exception):
    """The command line and environment do not say where the cluster is."""


def add_control_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", metavar="URL",
                        help=f"control plane URL, sqlite:///PATH or nats://... (${CONTROL_ENV})")


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, metavar="PATH",
                        help=f"operator private key that signs agent requests (default ${KEY_ENV})")
    parser.add_argument("--agent-port", type=int, metavar="PORT",
                        help=f"port of the machines' agents (default ${AGENT_PORT_ENV} or "
                             f"{DEFAULT_AGENT_PORT})")
    parser.add_argument("--route-wait", type=float, metavar="SECONDS",
                        help="how long a commit waits for every live machine's agent to "
                             f"confirm its routing (default ${ROUTE_WAIT_ENV} or "
                             f"{ROUTE_WAIT_S:g}; 0: do not wait, name who had not)")


def control_url(args: argparse.Namespace) -> str:
    explicit = args.control or os.environ.get(CONTROL_ENV)
    if not explicit:
        member = MachineHome(machine_home()).load()
        explicit = member.control if member else None
    return control_plane_url(explicit)


def open_control(args: argparse.Namespace) -> ControlPlane:
    url = control_url(args)
    scheme, _, path = url.partition("://")
    if scheme == "sqlite" and path and not Path(path).is_file():
        raise ConfigError(
            f"no control plane at {url}: give --control URL or set ${CONTROL_ENV}"
        )
    return open_control_plane(url)


def operator_key(args: argparse.Namespace) -> Ed25519PrivateKey:
    path = args.key or os.environ.get(KEY_ENV)
    if not path:
        made_by_init = MachineHome(machine_home()).operator_key
        if not made_by_init.exists():
            raise ConfigError(f"no operator key: give --key PATH or set ${KEY_ENV}")
        path = made_by_init
    try:
        return load_private_key(Path(path))
    except BadKey as exc:
        raise ConfigError(str(exc)) from exc


def agent_directory(args: argparse.Namespace) -> AgentDirectory:
    key = operator_key(args)
    port = args.agent_port or os.environ.get(AGENT_PORT_ENV) or DEFAULT_AGENT_PORT
    try:
        port = int(port)
    except ValueError:
        raise ConfigError(f"${AGENT_PORT_ENV} must be a port number, got {port!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"agent port must be 1-65535, got {port}")
    wait = args.route_wait if args.route_wait is not None else os.environ.get(ROUTE_WAIT_ENV)
    try:
        route_wait = float(wait) if wait is not None else ROUTE_WAIT_S
    except ValueError:
        raise ConfigError(f"${ROUTE_WAIT_ENV} must be seconds, got {wait!r}") from None
    if route_wait < 0:
        raise ConfigError(f"the route wait must not be negative, got {route_wait:g}")
    return AgentDirectory(key, port, route_wait_s=route_wait)


def reported(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Runs a cluster command, turning the typed errors of the layers below into a message on
    stderr (and, with ``--json``, an error object on stdout) and an exit status: 2 when the
    input is wrong (configuration, manifest), 1 when the cluster refused or failed."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (ConfigError, ManifestError) as exc:
            return _report(args, exc, 2)
        except (DeployError, ControlPlaneError, AgentError) as exc:
            return _report(args, exc, 1)

    return run


def _report(args: argparse.Namespace, exc: Exception, status: int) -> int:
    if getattr(args, "json", False):
        error: dict[str, object] = {"type": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, ManifestError):
            error["issues"] = [{"path": i.path, "message": i.message} for i in exc.issues]
        print_json({"error": error})
    return fail(str(exc), status)
