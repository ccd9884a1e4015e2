"""The machine agent: authenticated RPC for a machine's ZFS and container operations.

Callers use :class:`AgentClient`; the daemon is :mod:`ployz.agent.daemon` (``ployzd``).

Names are imported from their modules: the package imports none of them, so reaching one
module does not load the others (under emulation each import adds seconds to every ployzctl
start)."""
