"""The embedded backend: one SQLite file in WAL mode, the default for one box and the sandbox.

One table holds every document with its revision. Revisions come from a counter per kind (the
``sequences`` table), bumped by every create, update and delete, as NATS numbers a bucket's writes
with its stream sequence: so a key deleted and created again never gets back a revision an old
reader still holds, and a watch learns of any change to a kind by reading one number.

A write is one ``BEGIN IMMEDIATE`` transaction (the counter and the conditional ``UPDATE ... WHERE
revision = ?``), so writers from several threads or processes serialise on SQLite's write lock and
a killed writer leaves either the old row or the new one (the WAL journal rolls an unfinished
transaction back when the file is next opened).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ployz.control.errors import ControlPlaneUnavailable
from ployz.control.store import RevisionConflict, Versioned

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS documents (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        revision INTEGER NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS sequences (
        kind TEXT PRIMARY KEY,
        revision INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    # A file written before the counters existed: they start above every revision it holds.
    """
    INSERT OR IGNORE INTO sequences (kind, revision)
    SELECT kind, MAX(revision) FROM documents GROUP BY kind
    """,
)

# A writer waits this long for another process's transaction before giving up.
_BUSY_TIMEOUT_S = 30.0
# How often a watch reads its kind's counter: a cheap primary-key read, and well under the
# seconds within which the agents act on a change.
WATCH_POLL_S = 0.5


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
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise ControlPlaneUnavailable(f"{self.url}: {exc}") from exc

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The connection, for one statement or transaction; storage failures become a typed
        error."""
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
        def insert(db: sqlite3.Connection, revision: int) -> None:
            try:
                db.execute(
                    "INSERT INTO documents (kind, key, revision, value) VALUES (?, ?, ?, ?)",
                    (kind, key, revision, value),
                )
            except sqlite3.IntegrityError as exc:
                raise RevisionConflict(f"{kind}/{key} already exists") from exc

        return self._write(kind, insert)

    def update(self, kind: str, key: str, value: bytes, revision: int) -> int:
        def replace(db: sqlite3.Connection, new_revision: int) -> None:
            cursor = db.execute(
                "UPDATE documents SET value = ?, revision = ? "
                "WHERE kind = ? AND key = ? AND revision = ?",
                (value, new_revision, kind, key, revision),
            )
            if cursor.rowcount != 1:
                raise RevisionConflict(f"{kind}/{key} is no longer at revision {revision}")

        return self._write(kind, replace)

    def delete(self, kind: str, key: str, revision: int) -> None:
        def remove(db: sqlite3.Connection, _: int) -> None:
            cursor = db.execute(
                "DELETE FROM documents WHERE kind = ? AND key = ? AND revision = ?",
                (kind, key, revision),
            )
            if cursor.rowcount != 1:
                raise RevisionConflict(f"{kind}/{key} is no longer at revision {revision}")

        self._write(kind, remove)

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

    def watch(self, *kinds: str) -> SqliteWatch:
        # Each counter only grows, so their sum moves exactly when one of them does.
        return SqliteWatch(lambda: sum(self._changes(kind) for kind in kinds))

    def moved_to(self) -> str | None:
        """Never: only a single NATS server's control plane moves (to replicated servers)."""
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, kind: str, write: Callable[[sqlite3.Connection, int], None]) -> int:
        """Run ``write`` with the kind's next revision in one transaction; a raise undoes both."""
        with self._session() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                (revision,) = db.execute(
                    "INSERT INTO sequences (kind, revision) VALUES (?, 1) "
                    "ON CONFLICT (kind) DO UPDATE SET revision = revision + 1 "
                    "RETURNING revision",
                    (kind,),
                ).fetchone()
                write(db, revision)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT may have ended it already
                    db.execute("ROLLBACK")
                raise
        return int(revision)

    def _changes(self, kind: str) -> int:
        """The kind's write counter: it moves on at every create, update and delete."""
        with self._session() as db:
            row = db.execute("SELECT revision FROM sequences WHERE kind = ?", (kind,)).fetchone()
        return int(row[0]) if row else 0


class SqliteWatch:
    """:class:`~ployz.control.store.StoreWatch` that polls its kind's write counter.

    Polling, not a notification: the writers may be other processes, which SQLite does not tell
    about each other's commits.
    """

    def __init__(self, changes: Callable[[], int]) -> None:
        self._changes = changes
        self._seen = changes()

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self._changes()
            if current != self._seen:
                self._seen = current
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(WATCH_POLL_S, remaining))

    def close(self) -> None:
        """Nothing to release: the watch holds no connection or thread of its own."""
