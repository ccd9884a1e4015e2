"""``host:port`` addresses as command lines and the control plane write them, and back.

The transfer engine connects to (host, port) pairs; the agent listens on one and tells its
address, and the orchestrator hands a receiver's address to the sending agent. Brackets mark an
IPv6 host (``[fd00::2]:7070``), so the last colon always separates the port.
"""

from __future__ import annotations


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` to a (host, port) pair; ValueError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def format_address(host: str, port: int) -> str:
    """The text :func:`parse_address` reads back: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
