"""What the receiving bridge delivered: (payload hash, mailbox) → reply, in SQLite.

A lost answer makes the sender's Postfix send the same mail again; the receiver finds it here and
answers from the record instead of delivering a second copy. Records are durable before the answer
leaves (files.open_database: fsync on commit) and kept for a configured number of days.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..files import open_database
from ..mail.smtpreply import Reply

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS delivered ("
    " file_id BLOB NOT NULL, mailbox TEXT NOT NULL, code INTEGER NOT NULL, text TEXT NOT NULL,"
    " at REAL NOT NULL, PRIMARY KEY (file_id, mailbox))",
    "CREATE INDEX IF NOT EXISTS delivered_at ON delivered (at)",
)


class DeliveryStore:
    def __init__(self, path: Path, keep_seconds: float) -> None:
        self._keep = keep_seconds
        self._db = open_database(path, SCHEMA)

    def lookup(self, file_id: bytes, mailbox: str) -> Reply | None:
        row = self._db.execute(
            "SELECT code, text FROM delivered WHERE file_id = ? AND mailbox = ?", (file_id, mailbox)
        ).fetchone()
        return Reply(row[0], row[1]) if row else None

    def record(self, file_id: bytes, mailbox: str, reply: Reply) -> None:
        """Remember a final outcome (2xx or 5xx); 4xx is not final and is not kept."""
        if reply.code // 100 == 4:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO delivered (file_id, mailbox, code, text, at) VALUES (?, ?, ?, ?, ?)",
            (file_id, mailbox, reply.code, reply.text, time.time()),
        )

    def prune(self, now: float | None = None) -> int:
        cursor = self._db.execute("DELETE FROM delivered WHERE at < ?", ((now or time.time()) - self._keep,))
        return cursor.rowcount

    def close(self) -> None:
        self._db.close()
