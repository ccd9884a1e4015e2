"""State an agent keeps across restarts, in one SQLite file inside ``--state-dir``.

Two things live here. The replay cache: every accepted request's nonce until its timestamp leaves
the acceptance window, so a request captured before a restart is still refused after it. The
operation journal: every state-changing call is recorded when it starts and when it ends; calls
that were running when the agent died are marked ``interrupted`` at the next start (their outcome
is unknown: the caller must inspect the state they touched), so the orchestrator can ask what was
left half-done (for a receive: which dataset holds a resume token).

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the agent process being killed
(the write is in the WAL before ``commit`` returns); only a power loss may drop the last commits.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Literal

STATE_FILE = "agent.sqlite3"
JOURNAL_KEEP = 10_000

OperationStatus = Literal["running", "ok", "failed", "interrupted"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    keep_until_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (keep_until_ms);
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    nonce TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    status TEXT NOT NULL,
    error_code TEXT
);
"""


class AgentState:
    """The agent's durable state. Used from the event loop thread only."""

    def __init__(self, state_dir: Path) -> None:
        # The journal holds call parameters, which may include a service's environment.
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = state_dir / STATE_FILE
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.interrupted_at_start = self._db.execute(
            "UPDATE operations SET status = 'interrupted' WHERE status = 'running'"
        ).rowcount

    def close(self) -> None:
        self._db.close()

    # -- replay cache --------------------------------------------------------------------------

    def remember(self, nonce: str, keep_until_ms: int, now_ms: int) -> bool:
        with self._db:
            self._db.execute("DELETE FROM nonces WHERE keep_until_ms < ?", (now_ms,))
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO nonces (nonce, keep_until_ms) VALUES (?, ?)",
                (nonce, keep_until_ms),
            ).rowcount
        return inserted == 1

    # -- operation journal ---------------------------------------------------------------------

    def begin_operation(self, method: str, params: dict[str, Any], nonce: str, now_ms: int) -> int:
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO operations (method, params, nonce, started_ms, status) "
                "VALUES (?, ?, ?, ?, 'running')",
                (method, json.dumps(params, sort_keys=True), nonce, now_ms),
            )
            operation_id = cursor.lastrowid
            assert operation_id is not None  # set by a successful INSERT
            self._db.execute(
                "DELETE FROM operations WHERE id <= ? AND status != 'running'",
                (operation_id - JOURNAL_KEEP,),
            )
        return operation_id

    def finish_operation(self, operation_id: int, error_code: str | None, now_ms: int) -> None:
        with self._db:
            self._db.execute(
                "UPDATE operations SET finished_ms = ?, status = ?, error_code = ? WHERE id = ?",
                (now_ms, "ok" if error_code is None else "failed", error_code, operation_id),
            )

    def operations(
        self, status: OperationStatus | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The most recent operations first, optionally only those in ``status``."""
        query = (
            "SELECT id, method, params, nonce, started_ms, finished_ms, status, error_code "
            "FROM operations"
        )
        arguments: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            arguments = (status,)
        rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*arguments, limit))
        return [
            {
                "id": row[0],
                "method": row[1],
                "params": json.loads(row[2]),
                "nonce": row[3],
                "started_ms": row[4],
                "finished_ms": row[5],
                "status": row[6],
                "error_code": row[7],
            }
            for row in rows
        ]
