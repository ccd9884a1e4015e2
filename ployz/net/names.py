"""The DNS rules a service's names must follow: every service is answered as
``<service>.<namespace>.ployz.internal`` and may be reached through the gateway by a host name.

Manifest names are already lowercase letters, digits and '-' of at most 63 characters (they
become container and dataset names); a DNS label also may not end with '-' (RFC 1035's
letter-digit-hyphen rule), which is checked here, where routing needs it.
"""

from __future__ import annotations

import re

ZONE = "ployz.internal"
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MAX_NAME = 253


def is_dns_label(value: str) -> bool:
    return bool(_LABEL_RE.match(value))


def is_dns_name(value: str) -> bool:
    """Dot-separated DNS labels (a trailing dot allowed), 253 characters at most."""
    name = value.removesuffix(".")
    return 0 < len(name) <= _MAX_NAME and all(is_dns_label(part) for part in name.split("."))


def service_name(namespace: str, service: str) -> str:
    """The name DNS answers for a service, on every machine."""
    return f"{service}.{namespace}.{ZONE}"
