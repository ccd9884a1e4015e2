"""The machine's HTTP gateway daemon, which ``machine init`` and ``machine join`` start before
the agent: HAProxy listening on port 80 of the machine's WireGuard endpoint address, with the
configuration of :func:`ployz.net.gateway.config_text`. The agent then keeps its host map."""

from __future__ import annotations

from ployz.deploy.membership import daemons
from ployz.deploy.membership.local import MachineHome
from ployz.net.gateway import config_text
from ployz.private_files import write_private
from ployz.transfer.addresses import parse_address


def start_gateway(home: MachineHome, endpoint: str) -> str:
    """Writes the configuration (and an empty map, the first time) and starts the daemon;
    returns how it runs (as :func:`~ployz.deploy.membership.daemons.start` says)."""
    host, _ = parse_address(endpoint)
    home.gateway_dir.mkdir(parents=True, exist_ok=True)
    if not home.gateway_map.exists():
        write_private(home.gateway_map, "")
    write_private(home.gateway_config,
                  config_text(host, home.gateway_socket, home.gateway_map))
    return daemons.start(home.gateway_daemon())
