"""The machine-local network, through netlink: the WireGuard overlay interface and its peers.

Driven only by the agent (:mod:`ployz.agent.overlay`), which keeps the peers equal to the
cluster's machine facts; nothing in ployz outside the sandbox runs ``ip`` or ``wg``.

Import the submodules themselves: :mod:`ployz.net.keys` (key pairs and key files, for whoever
creates a machine's key), :mod:`ployz.net.peers` (peer values and their diff) and
:mod:`ployz.net.wireguard` (the interface). This package re-exports nothing, so that generating
a key does not import pyroute2.
"""
