"""The machine's HTTP gateway: HAProxy (Debian's), configured once, driven through its runtime
API.

Every machine runs one, on port 80 of its WireGuard endpoint's address. A request's ``Host``
(port stripped, lowercased) is looked up in a map of host -> ``address:port``, the service's
stable address and HTTP port; the request's destination is set to it and HAProxy connects
there, through the overlay's routes like any client of the machine. A host no service claims
gets a 404 from the gateway itself.

So the configuration never changes after ``machine init``/``join`` wrote it: the agent keeps
the map equal to the services' facts through the runtime API (``add map``, ``set map``,
``del map`` on the stats socket), and writes the map file too, which HAProxy reads when it
(re)starts. A migration changes nothing here: the address stays, the overlay moves its route.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ployz.net.errors import NetError
from ployz.private_files import write_private

PORT = 80
TIMEOUT_S = 5.0
_MAP_LINE = re.compile(r"^0x[0-9a-f]+ (\S+) (\S+)$")
_NOT_FOUND = ("http-request return status 404 content-type text/plain "
              'lf-string "no service answers to host %[req.hdr(host)]\\n" '
              "if !{ var(txn.service) -m found }")


class GatewayError(NetError):
    """HAProxy's runtime API could not be reached, or refused a command."""


def config_text(bind: str, socket_path: Path, hosts_map: Path, port: int = PORT) -> str:
    """HAProxy's whole configuration; ``bind`` is the endpoint's host address."""
    return f"""# Written by ployz (machine init/join): the gateway of this machine. The services it
# routes are in {hosts_map}, kept by the agent through {socket_path}.
global
    stats socket {socket_path} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 3s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 5s
    retries 2
    retry-on conn-failure empty-response response-timeout

frontend gateway
    bind {bind}:{port}
    http-request set-var(txn.service) req.hdr(host),field(1,:),lower,map({hosts_map})
    {_NOT_FOUND}
    http-request set-dst var(txn.service),field(1,:)
    http-request set-dst-port var(txn.service),field(2,:)
    default_backend services

backend services
    # 0.0.0.0:0 connects to the destination set above; connections are not reused, since
    # each request may go to another service.
    http-reuse never
    server service 0.0.0.0:0
"""


@dataclass(frozen=True)
class GatewayChanges:
    set: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.removed)


class Gateway:
    """The agent's handle on its machine's HAProxy."""

    def __init__(self, socket_path: Path, hosts_map: Path) -> None:
        self.socket_path = socket_path
        self.hosts_map = hosts_map

    def apply(self, hosts: Mapping[str, str]) -> GatewayChanges:
        """Makes the running map, and the file, map exactly ``hosts`` (host ->
        ``address:port``)."""
        write_private(self.hosts_map, "".join(f"{host} {target}\n"
                                              for host, target in sorted(hosts.items())))
        current = self.entries()
        changed, removed = [], []
        for host, target in sorted(hosts.items()):
            if host not in current:
                self._command(f"add map {self.hosts_map} {host} {target}")
            elif current[host] != target:
                self._command(f"set map {self.hosts_map} {host} {target}")
            else:
                continue
            changed.append(host)
        for host in sorted(set(current) - set(hosts)):
            self._command(f"del map {self.hosts_map} {host}")
            removed.append(host)
        return GatewayChanges(tuple(changed), tuple(removed))

    def entries(self) -> dict[str, str]:
        """The map as the running HAProxy holds it."""
        entries = {}
        for line in self._command(f"show map {self.hosts_map}").splitlines():
            match = _MAP_LINE.match(line.strip())
            if match:
                entries[match.group(1)] = match.group(2)
        return entries

    def _command(self, command: str) -> str:
        """One command on a connection of its own (HAProxy answers, then closes it). A
        connection reset on the way is the gateway's failure like a refused connect: an HAProxy
        starting or stopping accepts on its socket and drops what it accepted."""
        with self._connection() as conn:
            chunks = []
            try:
                conn.sendall(command.encode() + b"\n")
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            except OSError as exc:
                raise GatewayError(f"the gateway's runtime API at {self.socket_path} dropped "
                                   f"`{command}` ({exc.strerror or exc})") from exc
        reply = b"".join(chunks).decode(errors="replace")
        first = reply.strip().splitlines()[0] if reply.strip() else ""
        if first.lower().startswith(("unknown", "missing", "error", "'")) or "not found" in first:
            raise GatewayError(f"HAProxy refused `{command}`: {reply.strip()}")
        return reply

    @contextlib.contextmanager
    def _connection(self) -> Iterator[socket.socket]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(TIMEOUT_S)
        try:
            conn.connect(os.fspath(self.socket_path))
        except OSError as exc:
            conn.close()
            raise GatewayError(f"the gateway's runtime API at {self.socket_path} does not "
                               f"answer ({exc.strerror or exc}): is HAProxy (ployz-gateway) "
                               "running?") from exc
        try:
            yield conn
        finally:
            conn.close()
