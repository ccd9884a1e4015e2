"""The storage contract both backends implement: revisioned documents with compare-and-swap.

A document is a byte string under a key, within a kind (``machines``, ``namespaces``, ...). Every
write returns the document's new revision, and an update names the revision it replaces: if the
stored document has moved on, the update fails with :class:`RevisionConflict` and writes nothing.
That is the only primitive the control plane needs (NATS JetStream KV offers exactly this through
its expected-last-subject-sequence header, SQLite through a conditional UPDATE in a transaction),
so all of the control plane's logic is written once, above this interface.

Keys are dot-separated identifiers; ``list(kind, prefix)`` returns the documents whose key starts
with ``prefix`` followed by a dot (or every document of the kind when ``prefix`` is empty).

A revision is never reused for a key, also across a delete and a re-create: a compare-and-swap
holding the revision of a deleted document fails on its successor instead of overwriting it.

``watch(*kinds)`` tells a waiter that some document of the kinds changed, not which: the waiter then
reads what it needs. That keeps both backends' watches trivial and lets a watch that lost its
server say "something may have changed" instead of replaying what it missed.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

KINDS = ("machines", "namespaces", "deploys", "commits", "leases", "cluster", "invites", "acks",
         "measurements")


class Versioned(NamedTuple):
    value: bytes
    revision: int


class RevisionConflict(Exception):
    """The document was created or changed by someone else since it was read."""


class StoreWatch(Protocol):
    """Changes to the documents of one kind, as made by any writer (this process or another)."""

    def wait(self, timeout_s: float) -> bool:
        """True as soon as a document of the kind was created, updated or deleted since the
        previous wait (or since the watch was made); False when ``timeout_s`` passed first.

        Also True, with nothing changed, when the watch had to be re-established (NATS after a
        reconnect), since changes made meanwhile may have been missed: the caller re-reads.
        """
        ...

    def close(self) -> None: ...


class DocumentStore(Protocol):
    url: str

    def get(self, kind: str, key: str) -> Versioned | None: ...

    def create(self, kind: str, key: str, value: bytes) -> int:
        """Store a new document; :class:`RevisionConflict` if the key already exists."""
        ...

    def update(self, kind: str, key: str, value: bytes, revision: int) -> int:
        """Replace the document at ``revision``; :class:`RevisionConflict` if it moved on."""
        ...

    def delete(self, kind: str, key: str, revision: int) -> None:
        """Remove the document at ``revision``; :class:`RevisionConflict` if it moved on or is
        gone already."""
        ...

    def list(self, kind: str, prefix: str = "") -> list[tuple[str, Versioned]]: ...

    def watch(self, *kinds: str) -> StoreWatch:
        """A watch of every document of these kinds."""
        ...

    def moved_to(self) -> str | None:
        """The URL of the store that took this one's documents over, once it has (then this
        one is sealed: reads answer, writes raise ``ControlPlaneMoved``); None before."""
        ...

    def close(self) -> None: ...
