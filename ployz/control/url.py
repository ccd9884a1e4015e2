"""Where the control plane is: a URL, given explicitly or by ``PLOYZ_CONTROL_URL``.

- ``sqlite:///var/lib/ployz/control.db``: the embedded backend on that file (the default, for a
  single box and the sandbox, whose machines share one file system).
- ``nats://host1:4222,host2:4222,host3:4222?replicas=3``: NATS JetStream KV; every listed server
  is a seed the client may fail over to. Query parameters: ``replicas`` (of each bucket when this
  client creates it, default 1), ``bucket_prefix`` (default ``ployz``, so several clusters can
  share one NATS account), ``timeout`` (seconds to keep retrying while the cluster has no
  leader, default 20) and ``ca``: the cluster CA's certificate (DER, base64url without padding)
  that the servers' TLS certificates are verified against; with it the client speaks TLS only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import ssl
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from ployz.control.errors import InvalidControlPlaneUrl
from ployz.control.plane import ControlPlane
from ployz.control.store import DocumentStore

URL_ENV = "PLOYZ_CONTROL_URL"
DEFAULT_URL = "sqlite:///var/lib/ployz/control.db"


def _ca_certificate(text: str) -> bytes:
    """The CA certificate (DER) of a ``ca`` parameter; ValueError when it is not one."""
    try:
        der = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        if not der:
            raise ValueError("empty")
        ssl.create_default_context(cadata=der)
    except (binascii.Error, ssl.SSLError, ValueError) as exc:
        raise ValueError(f"not a CA certificate ({exc})") from None
    return der


_NATS_PARAMS: dict[str, Callable[[str], object]] = {
    "replicas": int, "bucket_prefix": str, "timeout": float, "ca": _ca_certificate}


def control_plane_url(explicit: str | None = None) -> str:
    """The URL to use: ``explicit`` if given, else ``$PLOYZ_CONTROL_URL``, else the default."""
    return explicit or os.environ.get(URL_ENV) or DEFAULT_URL


def open_control_plane(url: str | None = None) -> ControlPlane:
    """Connect to (and for SQLite, create if needed) the control plane at ``url``, or where it
    moved to from there (see ``ployz.control.relocation``): ``location`` says which."""
    url = control_plane_url(url)
    store = open_store(url)
    try:
        moved_to = store.moved_to()
    except BaseException:
        store.close()
        raise
    if moved_to is None:
        return ControlPlane(store, url)
    store.close()
    return ControlPlane(open_store(moved_to), moved_to)


def open_store(url: str) -> DocumentStore:
    """The store at ``url`` itself, never following a move."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        from ployz.control.sqlite_store import SqliteStore

        if not rest:
            raise InvalidControlPlaneUrl(f"{url!r}: expected sqlite:///path/to/control.db")
        return SqliteStore(rest)
    if scheme == "nats":
        from ployz.control.nats_store import NatsStore

        parts = urlsplit(url)
        servers = nats_servers(url)
        options: dict[str, object] = {}
        for name, values in parse_qs(parts.query).items():
            if name not in _NATS_PARAMS:
                raise InvalidControlPlaneUrl(
                    f"{url!r}: unknown parameter {name!r} (known: {', '.join(_NATS_PARAMS)})"
                )
            try:
                options[name] = _NATS_PARAMS[name](values[-1])
            except ValueError as exc:
                raise InvalidControlPlaneUrl(f"{url!r}: bad {name}: {exc}") from exc
        return NatsStore(servers, **options)  # type: ignore[arg-type]
    raise InvalidControlPlaneUrl(f"{url!r}: the scheme must be sqlite:// or nats://")


def nats_servers(url: str) -> list[str]:
    """The servers of a ``nats://`` URL, one ``nats://[user:password@]host:port`` each."""
    parts = urlsplit(url)
    hosts = [h for h in parts.netloc.split(",") if h]
    if parts.scheme != "nats" or not hosts or parts.path not in ("", "/"):
        raise InvalidControlPlaneUrl(f"{redact_url(url)!r}: expected "
                                     "nats://host:port[,host:port...]")
    return [f"nats://{h}" for h in hosts]


def ca_parameter(ca_der: bytes) -> str:
    """The value of a URL's ``ca`` parameter for this CA certificate."""
    return base64.urlsafe_b64encode(ca_der).decode().rstrip("=")


def ca_of(url: str) -> bytes | None:
    """The CA certificate a NATS URL names, if any."""
    values = parse_qs(urlsplit(url).query).get("ca")
    if not values:
        return None
    try:
        return _ca_certificate(values[-1])
    except ValueError as exc:
        raise InvalidControlPlaneUrl(f"{redact_url(url)!r}: bad ca: {exc}") from None


def tls_context(ca_der: bytes) -> ssl.SSLContext:
    """Trusts the cluster's CA and nothing else, and checks that a server's certificate names
    the address it was reached at."""
    context = ssl.create_default_context(cadata=ca_der)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def redact_url(url: str) -> str:
    """``url`` without the credentials a NATS URL may carry (``user:password@``), and with its
    CA certificate shortened to a fingerprint (``ca=sha256:...``), for output and logs."""
    scheme, sep, rest = url.partition("://")
    hosts = [host.rpartition("@")[2] for host in rest.split(",")]
    return _CA_PARAM.sub(_fingerprint, scheme + sep + ",".join(hosts))


_CA_PARAM = re.compile(r"(?<=[?&])ca=([A-Za-z0-9_-]+)")


def _fingerprint(match: re.Match[str]) -> str:
    return "ca=sha256:" + hashlib.sha256(match.group(1).encode()).hexdigest()[:16]
