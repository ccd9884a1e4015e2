"""Moving the control plane from the first machine's single JetStream server to the cluster's
replicated servers.

nats-server cannot turn a standalone JetStream server into a clustered one in place: a new meta
group does not adopt the streams of a standalone store. So a NATS cluster starts on a single
server and, when its third machine joins, its documents are copied to buckets replicated on the
three clustered servers, in three steps that each make the next one safe:

1. the old buckets are sealed (JetStream's read-only stream flag): from then on every write to
   them fails with :class:`~ployz.control.errors.ControlPlaneMoved`, so no fact can land in the
   old store after it was copied and be lost;
2. every document is copied, as it is, into the new buckets;
3. the new URL is published in a bucket of its own on the old server. Opening the control plane
   by the old URL (``open_control_plane``) then follows to the new one, so every client, agents
   included, finds the replicated servers without being told.

A move that stops halfway is finished by running it again: the copy compares before it writes,
and the old store's documents no longer change. Revisions restart in the new buckets, which is
harmless: a writer holding a revision of the old store has failed on the seal, and reads again
before it writes again.
"""

from __future__ import annotations

from ployz.control.nats_store import NatsStore
from ployz.control.store import KINDS


def relocate(source: NatsStore, target: NatsStore, target_url: str) -> int:
    """Moves every document of ``source`` to ``target`` (reached at ``target_url``, credentials
    included) and leaves ``source`` sealed, pointing there; returns how many documents it
    copied. Idempotent."""
    source.seal()
    copied = 0
    for kind in KINDS:
        for key, document in source.list(kind):
            current = target.get(kind, key)
            if current is None:
                target.create(kind, key, document.value)
            elif current.value != document.value:
                target.update(kind, key, document.value, current.revision)
            copied += 1
    source.publish_location(target_url)
    return copied
