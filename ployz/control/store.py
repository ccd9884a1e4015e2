"""The storage contract both backends implement: revisioned documents with compare-and-swap.

A document is a byte string under a key, within a kind (``machines``, ``namespaces``, ...). Every
write returns the document's new revision, and an update names the revision it replaces: if the
stored document has moved on, the update fails with :class:`RevisionConflict` and writes nothing.
That is the only primitive the control plane needs (NATS JetStream KV offers exactly this through
its expected-last-subject-sequence header, SQLite through a conditional UPDATE in a transaction),
so all of the control plane's logic is written once, above this interface.

Keys are dot-separated identifiers; ``list(kind, prefix)`` returns the documents whose key starts
with ``prefix`` followed by a dot (or every document of the kind when ``prefix`` is empty).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

KINDS = ("machines", "namespaces", "deploys", "commits", "leases")


class Versioned(NamedTuple):
    value: bytes
    revision: int


class RevisionConflict(Exception):
    """The document was created or changed by someone else since it was read."""


class DocumentStore(Protocol):
    url: str

    def get(self, kind: str, key: str) -> Versioned | None: ...

    def create(self, kind: str, key: str, value: bytes) -> int:
        """Store a new document; :class:`RevisionConflict` if the key already exists."""
        ...

    def update(self, kind: str, key: str, value: bytes, revision: int) -> int:
        """Replace the document at ``revision``; :class:`RevisionConflict` if it moved on."""
        ...

    def list(self, kind: str, prefix: str = "") -> list[tuple[str, Versioned]]: ...

    def close(self) -> None: ...
