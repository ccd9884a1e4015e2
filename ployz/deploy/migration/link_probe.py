"""The link between the two agents as it carries a send now: a probe through the engine, taken
while the plan samples the service's writes (both take seconds, and neither needs the other).

Why: the history of earlier sends (:class:`~ployz.control.LinkRate`) says what the link
carried then, under the load of then. A link shared with other traffic, or machines whose CPUs
are the bottleneck and busy with the service, carry a different rate from one migration to the
next: an estimate from history alone missed a whole apply by 66 % on a link that had become
faster. The probe measures the link under today's load; the history says what a ZFS send
achieves of what a probe measures (:func:`~ployz.control.link_fit.link_now`).

A probe is only ever a measurement: one that fails (an agent of an older version, a broken
connection) is logged and the estimate does without it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.api import Agent
from ployz.agent.errors import AgentError
from ployz.transfer.errors import TransferError
from ployz.transfer.session import new_secret
from ployz.transfer.tickets import Target, Ticket, sign

PROBE_S = 2.0
"""How long a probe sends: long enough that its handshake is a small part of it in a slow
guest, short enough to add little to a plan (it runs beside the plan's write sample)."""
TICKET_MARGIN_S = 60.0
RECEIVE_WAIT_S = 30.0

log = logging.getLogger(__name__)


class ProbeFailed(Exception):
    """The probe did not measure the link."""


@dataclass(frozen=True)
class LinkProbe:
    """Bytes a probe moved in its seconds, as the sender measured them (the handshake
    included)."""

    bytes: int
    seconds: float

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds


def probe_between(source: Agent, target: Agent, key: Ed25519PrivateKey,
               seconds: float = PROBE_S) -> LinkProbe:
    """One probe from ``source`` to ``target``, authorised as any transfer is (a ticket signed
    with the operator key, a fresh secret given to both agents); raises :class:`ProbeFailed`."""
    transfer_id = f"probe-{uuid.uuid4().hex}"
    secret = new_secret()
    ticket = sign(Ticket(transfer_id, Target("probe", transfer_id),
                         time.time() + seconds + TICKET_MARGIN_S), key)
    try:
        address = target.transfer.probe_receive(transfer_id, secret).address
        try:
            sent = source.transfer.probe_send(transfer_id, address, ticket, secret, seconds)
        except (AgentError, TransferError):
            with contextlib.suppress(AgentError):
                target.transfer.receive_cancel(transfer_id)
            raise
        state = target.transfer.receive_wait(transfer_id, timeout_s=RECEIVE_WAIT_S)
    except (AgentError, TransferError) as exc:
        raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc
    if state.state != "committed" or state.result is None:
        if state.state == "running":  # a receiver left waiting would hold its port 10 min
            with contextlib.suppress(AgentError):
                target.transfer.receive_cancel(transfer_id)
        raise ProbeFailed(f"the probe receiver {state.state}: {state.error}")
    if state.result.bytes != sent.bytes or not sent.seconds > 0:
        raise ProbeFailed(f"the receiver took {state.result.bytes} bytes of the {sent.bytes} "
                          f"sent in {sent.seconds} s")
    return LinkProbe(sent.bytes, sent.seconds)


class BackgroundProbe:
    """A probe running on its own thread, on agents of its own (each agent client serves one
    thread); :meth:`result` waits for it."""

    def __init__(self, source: Agent, target: Agent, key: Ed25519PrivateKey,
                 seconds: float) -> None:
        self._outcome: LinkProbe | None = None
        self._agents = (source.fork(), target.fork())
        self._thread = threading.Thread(target=self._run, args=(key, seconds),
                                        name="link-probe", daemon=True)
        self._thread.start()

    def _run(self, key: Ed25519PrivateKey, seconds: float) -> None:
        source, target = self._agents
        try:
            self._outcome = probe_between(source, target, key, seconds)
        except ProbeFailed as exc:
            log.warning("no probe of the link: %s; the estimate uses the link's history", exc)
        finally:
            source.close()
            target.close()

    def result(self) -> LinkProbe | None:
        """The probe, or None when it failed (logged)."""
        self._thread.join()
        return self._outcome

