"""The machine agent: authenticated RPC for a machine's ZFS and container operations.

Callers use :class:`AgentClient`; the daemon is :mod:`ployz.agent.daemon` (``ployzd``).
"""

from ployz.agent.client import AgentClient
from ployz.agent.errors import (
    AgentError,
    AgentTimeout,
    AgentUnreachable,
    AuthRefused,
    BadParams,
    ProtocolViolation,
    RemoteError,
    UnknownMethod,
)
from ployz.transfer.keys import generate_private_key, load_private_key, public_key_text

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentTimeout",
    "AgentUnreachable",
    "AuthRefused",
    "BadParams",
    "ProtocolViolation",
    "RemoteError",
    "UnknownMethod",
    "generate_private_key",
    "load_private_key",
    "public_key_text",
]
