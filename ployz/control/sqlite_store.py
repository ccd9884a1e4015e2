"""The embedded backend: one SQLite file in WAL mode, the default for one box and the sandbox.

One table holds every document with its revision. A compare-and-swap update is one conditional
``UPDATE ... WHERE revision = ?`` statement (its own transaction), so writers from several threads
or processes serialise on SQLite's write lock and a killed writer leaves either the old row or the
new one (the WAL journal rolls an unfinished transaction back when the file is next opened).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ployz.control.errors import ControlPlaneUnavailable
from ployz.control.store import RevisionConflict, Versioned

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID
"""

# A writer waits this long for another process's transaction before giving up.
_BUSY_TIMEOUT_S = 30.0


class SqliteStore:
    """:class:`~ployz.control.store.DocumentStore` on a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{self.path}"
        if not self.path.parent.is_dir():
            raise ControlPlaneUnavailable(f"{self.url}: no directory {self.path.parent}")
        # One connection shared by the threads of this process, used under a lock: SQLite
        # serialises writers anyway, and one connection keeps the WAL setup in one place.
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ControlPlaneUnavailable(f"{self.url}: {exc}") from exc

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The connection, for one statement; storage failures become a typed error."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise ControlPlaneUnavailable(f"{self.url}: {exc}") from exc

    def get(self, kind: str, key: str) -> Versioned | None:
        with self._session() as db:
            row = db.execute(
                "SELECT value, revision FROM documents WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return Versioned(bytes(row[0]), row[1]) if row else None

    def create(self, kind: str, key: str, value: bytes) -> int:
        with self._session() as db:
            try:
                db.execute(
                    "INSERT INTO documents (kind, key, revision, value) VALUES (?, ?, 1, ?)",
                    (kind, key, value),
                )
            except sqlite3.IntegrityError as exc:
                raise RevisionConflict(f"{kind}/{key} already exists") from exc
        return 1

    def update(self, kind: str, key: str, value: bytes, revision: int) -> int:
        # Revisions count up per document; documents are never deleted, so a revision number is
        # never reused for the same key and cannot be mistaken for an older write.
        with self._session() as db:
            cursor = db.execute(
                "UPDATE documents SET value = ?, revision = revision + 1 "
                "WHERE kind = ? AND key = ? AND revision = ?",
                (value, kind, key, revision),
            )
        if cursor.rowcount != 1:
            raise RevisionConflict(f"{kind}/{key} is no longer at revision {revision}")
        return revision + 1

    def list(self, kind: str, prefix: str = "") -> list[tuple[str, Versioned]]:
        # Identifiers contain no '.', so the keys of a prefix sort between "prefix." and "prefix/".
        low, high = (f"{prefix}.", f"{prefix}/") if prefix else ("", "\U0010ffff")
        with self._session() as db:
            rows = db.execute(
                "SELECT key, value, revision FROM documents "
                "WHERE kind = ? AND key >= ? AND key < ? ORDER BY key",
                (kind, low, high),
            ).fetchall()
        return [(key, Versioned(bytes(value), revision)) for key, value, revision in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
