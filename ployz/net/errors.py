"""The errors of the machine-local network layer: each names what failed and on which interface."""

from __future__ import annotations

import os


class NetError(Exception):
    """Base of the errors :mod:`ployz.net` raises."""


class WireGuardUnavailable(NetError):
    """The running kernel cannot do WireGuard: the overlay needs the in-kernel implementation."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the kernel has no WireGuard ({detail}): load the wireguard module "
            "(`modprobe wireguard`) or boot a kernel built with CONFIG_WIREGUARD"
        )


class NotWireGuard(NetError):
    """An interface of the wanted name exists but is of another kind: it is not ours to change."""

    def __init__(self, ifname: str, kind: str | None) -> None:
        self.ifname = ifname
        self.kind = kind
        super().__init__(
            f"interface {ifname} exists and is {'a ' + kind if kind else 'not a'} "
            "WireGuard interface: delete it or choose another name"
        )


class NetlinkError(NetError):
    """The kernel refused a netlink request."""

    def __init__(self, operation: str, ifname: str, code: int) -> None:
        self.operation = operation
        self.ifname = ifname
        self.code = code
        hint = " (needs CAP_NET_ADMIN)" if code == 1 else ""
        super().__init__(f"{operation} on {ifname}: {os.strerror(code)}{hint}")


class BadWireGuardKey(NetError, ValueError):
    """A WireGuard key (or key file) that is not 32 bytes of base64; the message says which."""
