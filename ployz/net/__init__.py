"""The machine-local network: the WireGuard overlay interface and its peers, the routes of
services' stable addresses, the services' DNS and the HTTP gateway.

Driven only by the agent (:mod:`ployz.agent.overlay`, :mod:`ployz.agent.routing`), which keeps
them equal to the cluster's facts; nothing in ployz outside the sandbox runs ``ip`` or ``wg``.

Import the submodules themselves: :mod:`ployz.net.keys` (key pairs and key files, for whoever
creates a machine's key), :mod:`ployz.net.peers` (peer values and their diff),
:mod:`ployz.net.wireguard` (the interface), :mod:`ployz.net.routes` (service routes),
:mod:`ployz.net.dns` (the DNS server), :mod:`ployz.net.gateway` (HAProxy) and
:mod:`ployz.net.names` (the DNS rules of service names). This package re-exports nothing, so
that generating a key does not import pyroute2.
"""
