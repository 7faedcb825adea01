"""What the bridge learned about Tox peers, in SQLite shared by the daemon and the CLI.

- learned pairings: an ordinary address a friend sent from, tied to that friend's key, so that
  a reply to it goes back over Tox. Recorded per local mailbox (the identity that is the friend),
  used by the whole household (contacts/routes.py); never made for an address someone wrote
  into the contacts book.
- pending friend requests from strangers, for `toxbridge contacts pending|accept`: at most
  PENDING_CAP per mailbox (the least recently asking dropped first), forgotten after
  PENDING_DAYS without a new request. Anyone on Tox can send requests, as many as they like.
- strangers whose request the bridge accepted (tox.friend_requests: accept), for `contacts list`.
- addresses the socketmap told Postfix to route the ordinary way (the household mails them, or
  they mailed it, without Tox): a friend may never claim them (issue 15.4). At most
  ORDINARY_CAP, the least recently asked forgotten first.
- friendships to end: `contacts remove` asks, the running bridge deletes the Tox friend and
  the row (the CLI has no Tox node; the bridge may be down and does it when it starts).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..files import open_database

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS learned (mailbox TEXT NOT NULL, address TEXT NOT NULL,"
    " public_key BLOB NOT NULL, at REAL NOT NULL, PRIMARY KEY (mailbox, address))",
    "CREATE TABLE IF NOT EXISTS pending (mailbox TEXT NOT NULL, public_key BLOB NOT NULL,"
    " message TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,"
    " PRIMARY KEY (mailbox, public_key))",
    "CREATE TABLE IF NOT EXISTS accepted (mailbox TEXT NOT NULL, public_key BLOB NOT NULL,"
    " message TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (mailbox, public_key))",
    "CREATE TABLE IF NOT EXISTS ordinary (address TEXT PRIMARY KEY, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ordinary_at ON ordinary (at)",
    "CREATE TABLE IF NOT EXISTS unfriend (mailbox TEXT NOT NULL, public_key BLOB NOT NULL,"
    " at REAL NOT NULL, PRIMARY KEY (mailbox, public_key))",
)
# What the `accepted` table says of a friend that sent no request: we asked (a mail to its full
# KEY@tox), or it was a Tox friend before the bridge recorded friends (found in the profile).
WE_ASKED = "(we sent the friend request: a mail to its Tox ID)"
FROM_BEFORE = "(a Tox friend from before the bridge recorded friends)"
PENDING_CAP = 100  # per mailbox
PENDING_DAYS = 30
ORDINARY_CAP = 10000  # addresses Postfix was told to route the ordinary way; the oldest go first


@dataclass(frozen=True)
class Learned:
    mailbox: str
    address: str
    public_key: bytes
    at: float


@dataclass(frozen=True)
class Accepted:
    mailbox: str
    public_key: bytes
    message: str
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

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Several writes as one (the connection autocommits each statement otherwise)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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

    def forget_key(self, mailbox: str, public_key: bytes) -> int:
        """Forget every address learned for this key by this mailbox."""
        return self._db.execute(
            "DELETE FROM learned WHERE mailbox = ? AND public_key = ?", (mailbox, public_key)
        ).rowcount

    # ---- addresses of the ordinary route

    def note_ordinary(self, address: str) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO ordinary (address, at) VALUES (?, ?)"
                " ON CONFLICT (address) DO UPDATE SET at = excluded.at",
                (address.lower(), time.time()),
            )
            self._db.execute(
                "DELETE FROM ordinary WHERE at <="
                " (SELECT at FROM ordinary ORDER BY at DESC LIMIT 1 OFFSET ?)",
                (ORDINARY_CAP,),
            )

    def is_ordinary(self, address: str) -> bool:
        row = self._db.execute("SELECT 1 FROM ordinary WHERE address = ?", (address.lower(),)).fetchone()
        return row is not None

    def ordinary_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM ordinary").fetchone()[0]

    # ---- friend requests from strangers

    def add_pending(self, mailbox: str, public_key: bytes, message: str) -> None:
        """Keep (or renew) a stranger's request; drop expired ones and those over the cap."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "INSERT INTO pending (mailbox, public_key, message, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (mailbox, public_key) DO UPDATE SET message = excluded.message, last_seen = excluded.last_seen",
                (mailbox, public_key, message, now, now),
            )
            self._db.execute(
                "DELETE FROM pending WHERE mailbox = ? AND rowid NOT IN (SELECT rowid FROM pending"
                " WHERE mailbox = ? ORDER BY last_seen DESC, rowid DESC LIMIT ?)",
                (mailbox, mailbox, PENDING_CAP),
            )
            self.expire_pending(now)

    def expire_pending(self, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - PENDING_DAYS * 86400
        return self._db.execute("DELETE FROM pending WHERE last_seen < ?", (cutoff,)).rowcount

    def pending(self) -> list[Pending]:
        self.expire_pending()
        rows = self._db.execute(
            "SELECT mailbox, public_key, message, first_seen, last_seen FROM pending ORDER BY first_seen"
        )
        return [Pending(*row) for row in rows]

    def drop_pending(self, mailbox: str, public_key: bytes) -> None:
        self._db.execute("DELETE FROM pending WHERE mailbox = ? AND public_key = ?", (mailbox, public_key))

    # ---- strangers accepted, friendships to end

    def add_accepted(self, mailbox: str, public_key: bytes, message: str) -> None:
        """A friend that is no contact: a stranger we accepted, one we asked (WE_ASKED), or one
        found in the profile (FROM_BEFORE); `contacts list` shows it and `remove` ends it."""
        self._db.execute(
            "INSERT OR REPLACE INTO accepted (mailbox, public_key, message, at) VALUES (?, ?, ?, ?)",
            (mailbox, public_key, message, time.time()),
        )

    def has_accepted(self, mailbox: str, public_key: bytes) -> bool:
        """Did this mailbox's identity accept a friend request from this key (a stranger's)?"""
        row = self._db.execute(
            "SELECT 1 FROM accepted WHERE mailbox = ? AND public_key = ?", (mailbox, public_key)
        ).fetchone()
        return row is not None

    def accepted(self) -> list[Accepted]:
        rows = self._db.execute("SELECT mailbox, public_key, message, at FROM accepted ORDER BY at")
        return [Accepted(*row) for row in rows]

    def end_friendship(self, mailbox: str, public_key: bytes) -> None:
        """Ask the bridge to delete this Tox friend of `mailbox`; forget what it learned of it."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO unfriend (mailbox, public_key, at) VALUES (?, ?, ?)",
                (mailbox, public_key, time.time()),
            )
            self._db.execute(
                "DELETE FROM accepted WHERE mailbox = ? AND public_key = ?", (mailbox, public_key)
            )
            self._db.execute(
                "DELETE FROM pending WHERE mailbox = ? AND public_key = ?", (mailbox, public_key)
            )
            self.forget_key(mailbox, public_key)

    def keep_friendship(self, public_key: bytes) -> None:
        """The key is a contact again (`contacts add`): a removal not yet carried out is off."""
        self._db.execute("DELETE FROM unfriend WHERE public_key = ?", (public_key,))

    def friendships_to_end(self, mailbox: str) -> list[bytes]:
        rows = self._db.execute("SELECT public_key FROM unfriend WHERE mailbox = ? ORDER BY at", (mailbox,))
        return [row[0] for row in rows]

    def friendship_ended(self, mailbox: str, public_key: bytes) -> None:
        self._db.execute("DELETE FROM unfriend WHERE mailbox = ? AND public_key = ?", (mailbox, public_key))

    def close(self) -> None:
        self._db.close()
