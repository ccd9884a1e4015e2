"""What the agent makes of the services' facts on its own machine, besides the WireGuard peers
(:mod:`ployz.agent.overlay`): a route through the overlay for the address of every service
that runs elsewhere, the DNS answers, and the gateway's map.

A service's address is routed by the kernel through the overlay interface when the service runs
on another machine, and not at all when it runs here (its container holds the address on the
service bridge). DNS answers ``<service>.<namespace>.ployz.internal`` with the address on every
machine; the gateway maps the service's HTTP host to ``address:port`` on every machine. Neither
of those changes when a service moves: only routes and peers do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from ployz.agent.overlay import ServiceFact
from ployz.net.names import service_name


class RouteTable(Protocol):
    """The kernel's service routes (:class:`ployz.net.routes.ServiceRoutes`)."""

    def apply(self, addresses: Iterable[str]) -> object: ...

    def close(self) -> None: ...


class HostMap(Protocol):
    """The gateway's host map (:class:`ployz.net.gateway.Gateway`)."""

    def apply(self, hosts: Mapping[str, str]) -> object: ...


SetRecords = Callable[[dict[str, str]], None]
"""Replaces the DNS answers (:meth:`ployz.net.dns.DnsServer.set_records`)."""


def dns_records(services: Iterable[ServiceFact]) -> dict[str, str]:
    return {service_name(s.namespace, s.name): s.address for s in services}


def gateway_hosts(services: Iterable[ServiceFact]) -> dict[str, str]:
    return {s.http[0]: f"{s.address}:{s.http[1]}" for s in services if s.http is not None}


def routed_elsewhere(machine_id: str, services: Iterable[ServiceFact]) -> list[str]:
    """The addresses this machine sends through the overlay: those of services elsewhere."""
    return sorted(s.address for s in services if s.machine != machine_id)


class ServiceRouting:
    """:class:`~ployz.agent.overlay.LocalRouting` of a machine: each part is optional (a test
    agent without an overlay interface has no routes; one without HAProxy no gateway)."""

    def __init__(self, routes: RouteTable | None, set_records: SetRecords | None,
                 gateway: HostMap | None) -> None:
        self._routes = routes
        self._set_records = set_records
        self._gateway = gateway

    def apply(self, machine_id: str, services: list[ServiceFact]) -> list[str]:
        changes = []
        if self._routes is not None:
            changed = self._routes.apply(routed_elsewhere(machine_id, services))
            if changed:
                changes.append(f"service routes {changed}")
        if self._set_records is not None:
            self._set_records(dns_records(services))
        if self._gateway is not None:
            changed = self._gateway.apply(gateway_hosts(services))
            if changed:
                changes.append(f"gateway {changed}")
        return changes

    def close(self) -> None:
        if self._routes is not None:
            self._routes.close()
