"""What the bridge learned about Tox peers, in SQLite shared by the daemon and the CLI.

- learned pairings: an ordinary address a friend sent from, tied to that friend's key, so that
  a reply to it goes back over Tox. Recorded per local mailbox (the identity that is the friend),
  used by the whole household (contacts/routes.py); never made for an address someone wrote
  into the contacts book.
- pending friend requests from strangers, for `toxbridge contacts pending|accept`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..files import open_database

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS learned (mailbox TEXT NOT NULL, address TEXT NOT NULL,"
    " public_key BLOB NOT NULL, at REAL NOT NULL, PRIMARY KEY (mailbox, address))",
    "CREATE TABLE IF NOT EXISTS pending (mailbox TEXT NOT NULL, public_key BLOB NOT NULL,"
    " message TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,"
    " PRIMARY KEY (mailbox, public_key))",
)


@dataclass(frozen=True)
class Learned:
    mailbox: str
    address: str
    public_key: bytes
    at: float


@dataclass(frozen=True)
class Pending:
    mailbox: str
    public_key: bytes
    message: str
    first_seen: float
    last_seen: float


class Roster:
    def __init__(self, path: Path | str) -> None:
        self._db = open_database(path, SCHEMA)

    # ---- learned pairings

    def learn(self, mailbox: str, address: str, public_key: bytes) -> bool:
        """Tie `address` to `public_key` for `mailbox` unless some pairing for it exists; True if new."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO learned (mailbox, address, public_key, at) VALUES (?, ?, ?, ?)",
            (mailbox, address.lower(), public_key, time.time()),
        )
        return cursor.rowcount == 1

    def learned_key(self, mailbox: str, address: str) -> bytes | None:
        row = self._db.execute(
            "SELECT public_key FROM learned WHERE mailbox = ? AND address = ?", (mailbox, address.lower())
        ).fetchone()
        return row[0] if row else None

    def first_learned(self, address: str) -> tuple[str, bytes] | None:
        """(mailbox, key) of the household's first pairing for this address (trust on first use)."""
        row = self._db.execute(
            "SELECT mailbox, public_key FROM learned WHERE address = ? ORDER BY at, mailbox LIMIT 1",
            (address.lower(),),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def has_key(self, mailbox: str, public_key: bytes) -> bool:
        """Did this mailbox learn any address from this key (so the key mailed it, as a friend)?"""
        row = self._db.execute(
            "SELECT 1 FROM learned WHERE mailbox = ? AND public_key = ? LIMIT 1", (mailbox, public_key)
        ).fetchone()
        return row is not None

    def keys_of(self, address: str) -> set[bytes]:
        """Every key any mailbox learned for this address."""
        rows = self._db.execute("SELECT public_key FROM learned WHERE address = ?", (address.lower(),))
        return {row[0] for row in rows}

    def learned(self) -> list[Learned]:
        rows = self._db.execute(
            "SELECT mailbox, address, public_key, at FROM learned ORDER BY address, mailbox"
        )
        return [Learned(*row) for row in rows]

    def forget(self, address: str) -> int:
        return self._db.execute("DELETE FROM learned WHERE address = ?", (address.lower(),)).rowcount

    # ---- friend requests from strangers

    def add_pending(self, mailbox: str, public_key: bytes, message: str) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO pending (mailbox, public_key, message, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (mailbox, public_key) DO UPDATE SET message = excluded.message, last_seen = excluded.last_seen",
            (mailbox, public_key, message, now, now),
        )

    def pending(self) -> list[Pending]:
        rows = self._db.execute(
            "SELECT mailbox, public_key, message, first_seen, last_seen FROM pending ORDER BY first_seen"
        )
        return [Pending(*row) for row in rows]

    def drop_pending(self, mailbox: str, public_key: bytes) -> None:
        self._db.execute("DELETE FROM pending WHERE mailbox = ? AND public_key = ?", (mailbox, public_key))

    def close(self) -> None:
        self._db.close()
