"""``ployzd`` (also ``ployzctl agent run``): the machine agent process.

Wires the pieces together: the state directory, the Docker runtime, the method groups, request
verification, the RPC server on the listen address, and the heartbeat. When listening it prints
one JSON line, ``{"event": "listening", "machine_id": ..., "address": "HOST:PORT"}``, on stdout
(useful with ``--listen HOST:0``); it stops cleanly on SIGTERM or SIGINT.

With ``--wireguard IFNAME`` the agent also keeps the machine's WireGuard overlay: it makes the
interface, its key, port and overlay address be so before it listens (``--listen`` is normally
the overlay address), then keeps the interface's peers equal to the other machines' facts in the
control plane (:mod:`ployz.agent.overlay`), and the routing of services over it
(:mod:`ployz.agent.routing`): their routes, DNS answers on the overlay address (``--dns-port``)
and, with ``--gateway-socket``, the map of the machine's HAProxy gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import ipaddress
import json
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ployz.agent.auth import DEFAULT_WINDOW_S, RequestVerifier, now_ms
from ployz.agent.context import AgentContext
from ployz.agent.dispatch import MethodRegistry
from ployz.agent.heartbeat import HeartbeatCallback, heartbeat_forever
from ployz.agent.overlay import OverlayKeeper
from ployz.agent.server import AgentServer
from ployz.agent.state import AgentState
from ployz.net.errors import NetError
from ployz.net.keys import read_private_key
from ployz.runtime.docker_runtime import DEFAULT_SOCKET, DockerRuntime
from ployz.transfer.addresses import format_address, parse_address
from ployz.transfer.keys import BadKey, read_public_key

if TYPE_CHECKING:  # imported when used: an agent without a control plane never loads them
    from ployz.agent.control_link import ControlLocation
    from ployz.net.dns import DnsServer

METHOD_GROUPS = ("agent_info", "containers", "zfs_ops", "transfers")
"""Modules of :mod:`ployz.agent.methods` whose ``register(registry, context)`` is called."""

DEFAULT_HEARTBEAT_S = 10.0
DNS_PORT = 53
DEFAULT_WIREGUARD_PORT = 51820
WORKER_THREADS = 32

log = logging.getLogger("ployz.agent")


@dataclass(frozen=True)
class OverlayConfig:
    """This machine's end of the WireGuard overlay."""

    ifname: str
    private_key: str = field(repr=False)
    listen_port: int
    address: str
    """The machine's overlay address with the overlay's prefix (``10.210.0.3/16``)."""


@dataclass(frozen=True)
class GatewayConfig:
    """The machine's HAProxy, as ``machine init``/``join`` configured it."""

    socket: Path
    hosts_map: Path


@dataclass(frozen=True)
class AgentConfig:
    machine_id: str
    listen: tuple[str, int]
    trusted: tuple[Ed25519PublicKey, ...]
    state_dir: Path
    pool: str | None = None
    docker_socket: str = DEFAULT_SOCKET
    control_url: str | None = None
    control_file: Path | None = None
    """Where ``control_url`` came from; rewritten when the control plane moves."""
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    window_s: float = DEFAULT_WINDOW_S
    overlay: OverlayConfig | None = None
    dns_port: int = DNS_PORT
    """Where DNS answers on the overlay address (0: no DNS); only with an overlay."""
    gateway: GatewayConfig | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--machine-id", required=True, help="this machine's id in the cluster")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to listen on (the machine's overlay address)")
    parser.add_argument("--trust", required=True, action="append", metavar="PUBKEY",
                        help="public key (ed25519:BASE64, or a file holding it) whose signed "
                             "requests are accepted; repeat for several keys")
    parser.add_argument("--state-dir", required=True, type=Path,
                        help="directory of the state kept across restarts")
    parser.add_argument("--pool", help="the ZFS pool this agent manages")
    parser.add_argument("--docker-socket", default=DEFAULT_SOCKET, metavar="PATH",
                        help=f"Docker daemon's unix socket (default {DEFAULT_SOCKET})")
    control = parser.add_mutually_exclusive_group()
    control.add_argument("--control", metavar="URL",
                         help="control plane URL to heartbeat to (sqlite:///... or nats://...)")
    control.add_argument("--control-file", type=Path, metavar="PATH",
                         help="file holding that URL: a NATS URL carries the cluster's "
                              "credentials, which a command line shows to every local user")
    parser.add_argument("--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_S,
                        metavar="SECONDS", help="seconds between heartbeats")
    parser.add_argument("--request-window", type=float, default=DEFAULT_WINDOW_S,
                        metavar="SECONDS",
                        help="largest accepted difference between a request's timestamp and "
                             f"this machine's clock (default {DEFAULT_WINDOW_S:g})")
    overlay = parser.add_argument_group(
        "overlay", "keep the machine's kernel WireGuard interface and its peers (needs --control)")
    overlay.add_argument("--wireguard", metavar="IFNAME",
                         help="the overlay's WireGuard interface (off unless given)")
    overlay.add_argument("--wireguard-key", type=Path, metavar="PATH",
                         help="file holding the machine's base64 private key (as `wg genkey` "
                              "writes it)")
    overlay.add_argument("--wireguard-port", type=int, default=DEFAULT_WIREGUARD_PORT,
                         metavar="PORT",
                         help=f"UDP port WireGuard listens on (default {DEFAULT_WIREGUARD_PORT})")
    overlay.add_argument("--overlay", metavar="CIDR",
                         help="this machine's overlay address with the overlay's prefix, "
                              "e.g. 10.210.0.3/16")
    overlay.add_argument("--dns-port", type=int, default=DNS_PORT, metavar="PORT",
                         help="UDP and TCP port of the services' DNS on the overlay address "
                              f"(default {DNS_PORT}; 0: none)")
    overlay.add_argument("--gateway-socket", type=Path, metavar="PATH",
                         help="the runtime API socket of the machine's HAProxy gateway")
    overlay.add_argument("--gateway-map", type=Path, metavar="PATH",
                         help="the host map file that gateway's configuration reads")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Raises ValueError (BadKey included) with a message naming the bad argument."""
    try:
        listen = parse_address(args.listen)
    except ValueError as exc:
        raise ValueError(f"--listen: {exc}") from exc
    try:
        trusted = tuple(read_public_key(text) for text in args.trust)
    except BadKey as exc:
        raise ValueError(f"--trust: {exc}") from exc
    if args.heartbeat_interval <= 0:
        raise ValueError("--heartbeat-interval must be positive")
    if args.request_window <= 0:
        raise ValueError("--request-window must be positive")
    control_url = (read_control_file(args.control_file) if args.control_file is not None
                   else args.control)
    return AgentConfig(
        machine_id=args.machine_id,
        listen=listen,
        trusted=trusted,
        state_dir=args.state_dir,
        pool=args.pool,
        docker_socket=args.docker_socket,
        control_url=control_url,
        control_file=args.control_file,
        heartbeat_s=args.heartbeat_interval,
        window_s=args.request_window,
        overlay=overlay_from_args(args, control_url),
        dns_port=args.dns_port,
        gateway=gateway_from_args(args),
    )


def gateway_from_args(args: argparse.Namespace) -> GatewayConfig | None:
    """None without --gateway-socket; raises ValueError naming the missing argument."""
    given = (args.gateway_socket is not None, args.gateway_map is not None)
    if given == (False, False):
        return None
    if not all(given):
        raise ValueError("--gateway-socket and --gateway-map go together")
    if args.wireguard is None:
        raise ValueError("--gateway-socket needs --wireguard")
    return GatewayConfig(args.gateway_socket, args.gateway_map)


def read_control_file(path: Path) -> str:
    """The URL in ``path``; raises ValueError naming the file when it cannot be read or holds
    no URL."""
    try:
        url = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"--control-file: cannot read {path}: {exc.strerror}") from exc
    if not url or "\n" in url:
        raise ValueError(f"--control-file: {path} must hold one control-plane URL")
    return url


def overlay_from_args(args: argparse.Namespace,
                      control_url: str | None) -> OverlayConfig | None:
    """None without --wireguard; raises ValueError naming the bad or missing argument."""
    if args.wireguard is None:
        for given, flag in ((args.wireguard_key, "--wireguard-key"), (args.overlay, "--overlay")):
            if given is not None:
                raise ValueError(f"{flag} needs --wireguard")
        return None
    from ployz.net.wireguard import check_ifname  # pyroute2: only for agents with an overlay

    for needed, flag in ((args.wireguard_key, "--wireguard-key"), (args.overlay, "--overlay"),
                         (control_url, "--control or --control-file")):
        if needed is None:
            raise ValueError(f"--wireguard needs {flag}")
    try:
        check_ifname(args.wireguard)
    except ValueError as exc:
        raise ValueError(f"--wireguard: {exc}") from exc
    if not 0 < args.wireguard_port < 65536:
        raise ValueError("--wireguard-port must be in 1-65535")
    if not 0 <= args.dns_port < 65536:
        raise ValueError("--dns-port must be in 0-65535")
    if "/" not in args.overlay:
        raise ValueError(f"--overlay: {args.overlay!r} has no prefix; give the overlay's, "
                         "e.g. 10.210.0.3/16")
    try:
        address = ipaddress.ip_interface(args.overlay)
    except ValueError as exc:
        raise ValueError(f"--overlay: {exc}") from exc
    try:
        private_key = read_private_key(args.wireguard_key)
    except ValueError as exc:
        raise ValueError(f"--wireguard-key: {exc}") from exc
    return OverlayConfig(args.wireguard, private_key, args.wireguard_port, str(address))


def build_registry(context: AgentContext) -> MethodRegistry:
    registry = MethodRegistry()
    for group in METHOD_GROUPS:
        importlib.import_module(f"ployz.agent.methods.{group}").register(registry, context)
    return registry


async def serve(config: AgentConfig, heartbeat: HeartbeatCallback | None,
                overlay: OverlayKeeper | None = None, dns: DnsServer | None = None) -> None:
    """Runs the agent until SIGTERM or SIGINT; ``overlay`` and ``dns`` run from the moment it
    listens."""
    state = AgentState(config.state_dir)
    if state.interrupted_at_start:
        log.warning("%d operation(s) were interrupted by the last stop; see agent.operations",
                    state.interrupted_at_start)
    context = AgentContext(
        machine_id=config.machine_id,
        pool=config.pool,
        runtime=DockerRuntime(config.docker_socket),
        state=state,
        started_ms=now_ms(),
        trusted=config.trusted,
    )
    verifier = RequestVerifier(config.machine_id, config.trusted, state, config.window_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with ThreadPoolExecutor(WORKER_THREADS, "ployz-agent") as workers, \
            ThreadPoolExecutor(1, "ployz-heartbeat") as heartbeat_thread:
        server = AgentServer(config.machine_id, build_registry(context), verifier, state, workers)
        listener = await server.listen(*config.listen)
        context.address = format_address(*listener.sockets[0].getsockname()[:2])
        if dns is not None:
            await dns.start()
        print(json.dumps({"event": "listening", "machine_id": config.machine_id,
                          "address": context.address}), flush=True)
        if overlay is not None:
            overlay.start()
        beating = (
            asyncio.create_task(
                heartbeat_forever(context, heartbeat, config.heartbeat_s, heartbeat_thread)
            )
            if heartbeat is not None
            else None
        )
        await stop.wait()
        log.info("stopping")
        listener.close()
        server.close_connections()
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        if overlay is not None:
            await asyncio.to_thread(overlay.stop)
        if dns is not None:
            await dns.close()
        await listener.wait_closed()
    context.runtime.close()
    state.close()


def prepare_overlay(overlay: OverlayConfig, machine_id: str, location: ControlLocation,
                    dns: DnsServer | None, gateway: GatewayConfig | None) -> OverlayKeeper:
    """Makes the interface be as configured, now (the agent listens on its address next), and
    returns the keeper of its peers and of the services' routing. Runs before the event loop:
    pyroute2 runs its own."""
    from ployz.agent.control_link import ControlPlaneFacts
    from ployz.agent.routing import ServiceRouting
    from ployz.net.gateway import Gateway
    from ployz.net.routes import ServiceRoutes, enable_forwarding
    from ployz.net.wireguard import WireGuardLink

    with WireGuardLink(overlay.ifname) as link:
        changes = link.ensure(overlay.private_key, overlay.listen_port, overlay.address)
    if enable_forwarding():
        changes.append("IPv4 forwarding on (the overlay reaches the service bridge)")
    for change in changes:
        log.info("overlay interface %s: %s", overlay.ifname, change)

    def open_routing() -> ServiceRouting:
        return ServiceRouting(
            ServiceRoutes(overlay.ifname), dns.set_records if dns is not None else None,
            Gateway(gateway.socket, gateway.hosts_map) if gateway is not None else None)

    return OverlayKeeper(machine_id, lambda: WireGuardLink(overlay.ifname),
                         lambda: ControlPlaneFacts(location, machine_id),
                         open_routing=open_routing)


def run(config: AgentConfig) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    heartbeat = None
    location = None
    if config.control_url is not None:
        from ployz.agent.control_link import ControlLocation, control_plane_heartbeat

        location = ControlLocation(config.control_url, config.control_file)
        heartbeat = control_plane_heartbeat(location)
    keeper = None
    dns = None
    if config.overlay is not None:
        assert location is not None  # config_from_args requires a control URL
        if config.dns_port:
            from ployz.net.dns import DnsServer

            dns = DnsServer(str(ipaddress.ip_interface(config.overlay.address).ip),
                            config.dns_port)
        try:
            keeper = prepare_overlay(config.overlay, config.machine_id, location, dns,
                                     config.gateway)
        except (NetError, OSError) as exc:
            log.error("cannot set up the overlay: %s", exc)
            return 1
    try:
        uvloop.run(serve(config, heartbeat, keeper, dns))
    except OSError as exc:  # the DNS port taken, the listen address missing
        log.error("cannot serve: %s", exc)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ployzd", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
