"""The one translation of pyroute2's netlink errors into :class:`~ployz.net.errors.NetlinkError`
(naming the operation and the interface), for the modules that drive netlink."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyroute2.netlink.exceptions import (  # type: ignore[import-untyped]
    NetlinkError as PyrouteNetlinkError,
)

from ployz.net.errors import NetlinkError


@contextlib.contextmanager
def translated(operation: str, ifname: str) -> Iterator[None]:
    try:
        yield
    except PyrouteNetlinkError as exc:
        raise NetlinkError(operation, ifname, exc.code) from exc
