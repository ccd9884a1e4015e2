"""The configuration of the cluster's JetStream server, as the product writes it.

With ``--control nats``, ``machine init`` runs a JetStream server on the first machine from a
configuration file this module renders: clients on the machine's address, a user and password
required of every client, the JetStream store in the machine's home, HTTP monitoring (if asked
for) on 127.0.0.1 only.

A cluster starts on one such server, standalone (``machine init``), and moves to three
clustered servers, one on each of its first three machines, when the third one joins (see
``ployz.control.relocation``): nats-server 2.9 cannot turn a standalone JetStream server into a
clustered one in place, so each clustered server is configured clustered from its first start
(``cluster_port`` and ``routes``), and the first machine runs both.

With ``tls``, clients must speak TLS to the server (which presents a certificate of the cluster's
CA, see ``ployz.deploy.membership.certificates``; they still authenticate with the password), and
the servers of a cluster speak mutual TLS on their routes, each verifying the other's certificate
against the CA.

The credentials are restricted to the characters a URL carries unencoded (letters, digits,
``-._~``): nats-py sends the user and password of a ``nats://user:password@host`` URL without
percent-decoding them, so any other character would make :meth:`NatsServerConfig.client_url`
name a password the server does not know.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ployz.private_files import write_private
from ployz.transfer.addresses import format_address

DEFAULT_PORT = 4222
DEFAULT_CLUSTER_NAME = "ployz"

_SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_CREDENTIAL_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def new_credentials() -> tuple[str, str]:
    """A fresh ``(user, password)`` for a new cluster's server; 256 bits in the password."""
    return f"ployz-{secrets.token_hex(4)}", secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate and key, and the CA its routes' peers are verified against."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def render(self, *, verify: bool) -> list[str]:
        return ["tls {",
                f"    cert_file: {_string(str(self.cert_file))}",
                f"    key_file: {_string(str(self.key_file))}",
                f"    ca_file: {_string(str(self.ca_file))}",
                f"    verify: {'true' if verify else 'false'}",
                "    timeout: 5",
                "}"]


@dataclass(frozen=True, kw_only=True)
class NatsServerConfig:
    """One JetStream server. ``host`` is the address it listens on for clients (the machine's
    underlay address); raises ValueError when a field is malformed."""

    server_name: str
    host: str
    port: int = DEFAULT_PORT
    store_dir: Path
    user: str
    password: str
    monitor_port: int | None = None
    """HTTP monitoring (``/varz``, ``/jsz``), on 127.0.0.1 only; off when None."""
    cluster_name: str = DEFAULT_CLUSTER_NAME
    cluster_port: int | None = None
    """Where the server listens for routes from the other servers (on ``host``); rendered,
    with ``routes``, only when given."""
    routes: tuple[str, ...] = ()
    """The other servers' route URLs, ``nats://user:password@host:port``: a route
    authenticates with the same credentials as a client."""
    tls: ServerTls | None = None

    def __post_init__(self) -> None:
        for what, name in (("server name", self.server_name), ("cluster name", self.cluster_name)):
            if not _SERVER_NAME_RE.match(name):
                raise ValueError(
                    f"NATS {what} {name!r}: 1-63 letters, digits, '_' or '-', "
                    "starting with a letter or digit"
                )
        _check_host(self.host)
        for what, port in (
            ("port", self.port),
            ("monitor port", self.monitor_port),
            ("cluster port", self.cluster_port),
        ):
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"NATS {what} {port}: expected 1-65535")
        if not self.store_dir.is_absolute():
            raise ValueError(f"NATS store directory {self.store_dir}: must be absolute")
        for what, value in (("user", self.user), ("password", self.password)):
            if not _CREDENTIAL_RE.match(value):
                raise ValueError(
                    f"NATS {what}: letters, digits, '-', '.', '_' or '~' only "
                    "(nats-py does not percent-decode credentials in a URL)"
                )
        if self.routes and self.cluster_port is None:
            raise ValueError("NATS routes need a cluster port to listen for the other servers")

    def render(self) -> str:
        """The server's configuration file (nats-server syntax)."""
        credentials = [f"    user: {_string(self.user)}", f"    password: {_string(self.password)}"]
        lines = [
            "# Written by ployz (`ployzctl machine init --control nats`); holds the cluster's",
            "# credentials: keep it readable by root only.",
            f"server_name: {_string(self.server_name)}",
            f"host: {_string(self.host)}",
            f"port: {self.port}",
            "jetstream {",
            f"    store_dir: {_string(str(self.store_dir))}",
            "}",
            "authorization {",
            *credentials,
            "}",
        ]
        if self.tls is not None:
            lines += self.tls.render(verify=False)  # clients prove themselves by password
        if self.monitor_port is not None:
            lines.append(f"http: {_string(f'127.0.0.1:{self.monitor_port}')}")
        if self.cluster_port is not None:
            lines += [
                "cluster {",
                f"    name: {_string(self.cluster_name)}",
                f"    host: {_string(self.host)}",
                f"    port: {self.cluster_port}",
                "    authorization {",
                *(f"    {line}" for line in credentials),
                "    }",
                "    routes: [",
                *(f"        {_string(route)}" for route in self.routes),
                "    ]",
                *(f"    {line}" for line in (self.tls.render(verify=True) if self.tls else [])),
                "}",
            ]
        return "\n".join(lines) + "\n"

    def client_url(self, host: str | None = None, ca: str | None = None) -> str:
        """``nats://USER:PASSWORD@HOST:PORT[?ca=CA]``, the control-plane URL of this server;
        ``host`` (default: the listen address) is where the client reaches it, ``ca`` the CA
        its certificate is verified against (:func:`ployz.control.url.ca_parameter`)."""
        host = host or self.host
        _check_host(host)
        if _is_unspecified(host):
            raise ValueError(
                f"the server listens on every address ({host}): give the host clients reach it at"
            )
        url = f"nats://{self.user}:{self.password}@{format_address(host, self.port)}"
        return f"{url}?ca={ca}" if ca else url

    def write(self, path: Path) -> None:
        """Writes :meth:`render` to ``path`` whole (a temporary file renamed), mode 0600: it
        holds the cluster's credentials."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, self.render())


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"NATS host {host!r}: expected an IP address or a host name") from None


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _string(text: str) -> str:
    """A double-quoted nats-server string: quoted, a value is never read as a number, a
    boolean or a ``$variable``."""
    escaped = "".join(
        _ESCAPES.get(char)
        or (f"\\x{ord(char):02x}" if ord(char) < 0x20 or char == "\x7f" else char)
        for char in text
    )
    return f'"{escaped}"'
