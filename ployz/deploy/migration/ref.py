"""``<namespace>/<service>``: how an operator names the service to move."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ployz.deploy.migration.errors import MalformedServiceRef
from ployz.runtime.model import NAME_PATTERN

_NAME_RE = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    service: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service}"

    @property
    def holder(self) -> str:
        """The deploy lock holder of this service's migrations: stable, so that ``apply`` run
        again after a killed run takes the lock back at once instead of waiting for its TTL."""
        return f"migrate:{self}"


def parse_service_ref(text: str) -> ServiceRef:
    """Parses ``shop/db``; names follow the manifest's rules (they become container and
    dataset names)."""
    namespace, sep, service = text.partition("/")
    if not sep:
        raise MalformedServiceRef(text, "no '/' between namespace and service")
    for what, name in (("namespace", namespace), ("service", service)):
        if not _NAME_RE.match(name):
            raise MalformedServiceRef(
                text, f"{what} {name!r} is not 1-63 lowercase letters, digits or '-' starting "
                "with a letter or digit")
    return ServiceRef(namespace, service)
