"""Chat messages from plain Tox clients, on disk until their mail is in Dovecot (SQLite).

A message is written (and, with synchronous=FULL, on disk) before toxcore's callback returns: a
bridge killed with -9 in the middle of a burst delivers it after the restart. The thread of each
friend's chat mails (the first and the last Message-ID) is kept here too, so a burst after a
restart still threads under the earlier ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..files import open_database

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chat_messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL, friend_key BLOB NOT NULL,"
    " at REAL NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, text BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS chat_messages_friend ON chat_messages (mailbox, friend_key, id)",
    "CREATE TABLE IF NOT EXISTS chat_threads ("
    " mailbox TEXT NOT NULL, friend_key BLOB NOT NULL, root TEXT NOT NULL, last TEXT NOT NULL,"
    " PRIMARY KEY (mailbox, friend_key))",
    "CREATE TABLE IF NOT EXISTS chat_apps ("
    " mailbox TEXT NOT NULL, friend_key BLOB NOT NULL, since REAL NOT NULL,"
    " PRIMARY KEY (mailbox, friend_key))",
    # A file a chat app sent: its row in chat_messages (kind FILE, text = its file name) places
    # it in the burst; this row says where the completed file is and how big it is.
    "CREATE TABLE IF NOT EXISTS chat_files ("
    " message INTEGER PRIMARY KEY, mailbox TEXT NOT NULL, friend_key BLOB NOT NULL,"
    " path TEXT NOT NULL, size INTEGER NOT NULL)",
    # What each friend made us store per UTC day (chat.day_max_messages, chat.day_max_bytes).
    "CREATE TABLE IF NOT EXISTS chat_days ("
    " mailbox TEXT NOT NULL, friend_key BLOB NOT NULL, day TEXT NOT NULL,"
    " messages INTEGER NOT NULL, bytes INTEGER NOT NULL, file_bytes INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (mailbox, friend_key, day))",
    # Friends that greeted as bridges, in this run or an earlier one: never taken for chat apps.
    "CREATE TABLE IF NOT EXISTS bridges ("
    " mailbox TEXT NOT NULL, friend_key BLOB NOT NULL, since REAL NOT NULL,"
    " PRIMARY KEY (mailbox, friend_key))",
)

NORMAL, ACTION, FILE = "normal", "action", "file"


def utc_day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


@dataclass(frozen=True)
class StoredMessage:
    id: int
    at: float
    kind: str  # NORMAL or ACTION (/me)
    name: str  # the friend's Tox name when it was sent
    text: bytes  # the message; for a FILE, its file name
    path: str = ""  # a FILE: where it is on disk


class ChatStore:
    def __init__(self, path: Path | str) -> None:
        self._db = open_database(path, SCHEMA)

    def add(self, mailbox: str, friend_key: bytes, at: float, kind: str, name: str, text: bytes) -> None:
        """Keep the message and count it for its UTC day, in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO chat_messages (mailbox, friend_key, at, kind, name, text)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (mailbox, friend_key, at, kind, name, text),
            )
            self._db.execute(
                "INSERT INTO chat_days (mailbox, friend_key, day, messages, bytes) VALUES (?, ?, ?, 1, ?)"
                " ON CONFLICT (mailbox, friend_key, day) DO UPDATE"
                " SET messages = messages + 1, bytes = bytes + excluded.bytes",
                (mailbox, friend_key, utc_day(at), len(text)),
            )
            # Days before yesterday are of no more use.
            self._db.execute("DELETE FROM chat_days WHERE day < ?", (utc_day(at - 2 * 86400),))

    def day(self, mailbox: str, friend_key: bytes, at: float) -> tuple[int, int]:
        """(messages, bytes) the friend made us keep on the UTC day of `at`."""
        row = self._db.execute(
            "SELECT messages, bytes FROM chat_days WHERE mailbox = ? AND friend_key = ? AND day = ?",
            (mailbox, friend_key, utc_day(at)),
        ).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def day_file_bytes(self, mailbox: str, friend_key: bytes, at: float) -> int:
        """Bytes of files the friend made us keep on the UTC day of `at`."""
        row = self._db.execute(
            "SELECT file_bytes FROM chat_days WHERE mailbox = ? AND friend_key = ? AND day = ?",
            (mailbox, friend_key, utc_day(at)),
        ).fetchone()
        return row[0] if row else 0

    def add_file(
        self, mailbox: str, friend_key: bytes, at: float, name: str, filename: str, path: Path
    ) -> None:
        """A completed file (already synced at `path`) joins the friend's open burst."""
        with self._db:  # one transaction: both rows or neither
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO chat_messages (mailbox, friend_key, at, kind, name, text) VALUES (?, ?, ?, ?, ?, ?)",
                (mailbox, friend_key, at, FILE, name, filename.encode()),
            )
            self._db.execute(
                "INSERT INTO chat_files (message, mailbox, friend_key, path, size) VALUES (?, ?, ?, ?, ?)",
                (cursor.lastrowid, mailbox, friend_key, str(path), path.stat().st_size),
            )
            self._db.execute(
                "INSERT INTO chat_days (mailbox, friend_key, day, messages, bytes, file_bytes)"
                " VALUES (?, ?, ?, 1, 0, ?) ON CONFLICT (mailbox, friend_key, day) DO UPDATE"
                " SET messages = messages + 1, file_bytes = file_bytes + excluded.file_bytes",
                (mailbox, friend_key, utc_day(at), path.stat().st_size),
            )

    def burst(self, mailbox: str, friend_key: bytes) -> list[StoredMessage]:
        """The friend's messages (and files) not yet delivered, oldest first."""
        rows = self._db.execute(
            "SELECT m.id, m.at, m.kind, m.name, m.text, COALESCE(f.path, '') FROM chat_messages m"
            " LEFT JOIN chat_files f ON f.message = m.id WHERE m.mailbox = ? AND m.friend_key = ?"
            " ORDER BY m.id",
            (mailbox, friend_key),
        ).fetchall()
        return [StoredMessage(*row) for row in rows]

    def size(self, mailbox: str, friend_key: bytes) -> tuple[int, int]:
        """(messages and files, bytes of text) waiting for the friend's next mail."""
        count, total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN kind = ? THEN 0 ELSE LENGTH(text) END), 0)"
            " FROM chat_messages WHERE mailbox = ? AND friend_key = ?",
            (FILE, mailbox, friend_key),
        ).fetchone()
        return count, total

    def file_bytes(self, mailbox: str, friend_key: bytes) -> int:
        """Bytes of the files waiting for the friend's next mail."""
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM chat_files WHERE mailbox = ? AND friend_key = ?",
            (mailbox, friend_key),
        ).fetchone()
        return total

    def file_paths(self) -> set[str]:
        """Every file some burst still holds (what else is in the files directory is a leftover)."""
        return {row[0] for row in self._db.execute("SELECT path FROM chat_files")}

    def waiting(self, mailbox: str) -> list[bytes]:
        """Friends whose messages wait for delivery (an earlier run's, after a kill)."""
        rows = self._db.execute(
            "SELECT DISTINCT friend_key FROM chat_messages WHERE mailbox = ?", (mailbox,)
        ).fetchall()
        return [row[0] for row in rows]

    def thread(self, mailbox: str, friend_key: bytes) -> tuple[str, str] | None:
        """(first, last) Message-ID of the friend's chat mails so far."""
        row = self._db.execute(
            "SELECT root, last FROM chat_threads WHERE mailbox = ? AND friend_key = ?", (mailbox, friend_key)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def delivered(self, mailbox: str, friend_key: bytes, last_id: int, message_id: str) -> list[Path]:
        """The messages up to last_id are in the mailbox as `message_id`: forget them, thread on.
        Returns the files they held, for the caller to remove (after the commit: a kill in
        between leaves a file no row names, which the next start removes)."""
        with self._db:  # one transaction: a kill leaves either both changes or neither
            self._db.execute("BEGIN")
            files = [
                Path(row[0])
                for row in self._db.execute(
                    "SELECT path FROM chat_files WHERE mailbox = ? AND friend_key = ? AND message <= ?",
                    (mailbox, friend_key, last_id),
                )
            ]
            self._db.execute(
                "DELETE FROM chat_files WHERE mailbox = ? AND friend_key = ? AND message <= ?",
                (mailbox, friend_key, last_id),
            )
            self._db.execute(
                "DELETE FROM chat_messages WHERE mailbox = ? AND friend_key = ? AND id <= ?",
                (mailbox, friend_key, last_id),
            )
            self._db.execute(
                "INSERT INTO chat_threads (mailbox, friend_key, root, last) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (mailbox, friend_key) DO UPDATE SET last = excluded.last",
                (mailbox, friend_key, message_id, message_id),
            )
        return files

    def answered(self, mailbox: str, friend_key: bytes, message_id: str) -> None:
        """A mail went to the friend as chat: their next burst answers it (In-Reply-To)."""
        self._db.execute(
            "INSERT INTO chat_threads (mailbox, friend_key, root, last) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (mailbox, friend_key) DO UPDATE SET last = excluded.last",
            (mailbox, friend_key, message_id, message_id),
        )

    def chat_apps(self, mailbox: str) -> set[bytes]:
        """Friends known to be plain chat apps, not bridges (remembered across restarts)."""
        rows = self._db.execute("SELECT friend_key FROM chat_apps WHERE mailbox = ?", (mailbox,))
        return {row[0] for row in rows}

    def set_chat_app(self, mailbox: str, friend_key: bytes, is_chat_app: bool, at: float) -> None:
        if is_chat_app:
            self._db.execute(
                "INSERT OR IGNORE INTO chat_apps (mailbox, friend_key, since) VALUES (?, ?, ?)",
                (mailbox, friend_key, at),
            )
        else:
            self._db.execute(
                "DELETE FROM chat_apps WHERE mailbox = ? AND friend_key = ?", (mailbox, friend_key)
            )

    def bridges(self, mailbox: str) -> set[bytes]:
        """Friends that greeted as bridges, in this run or an earlier one."""
        rows = self._db.execute("SELECT friend_key FROM bridges WHERE mailbox = ?", (mailbox,))
        return {row[0] for row in rows}

    def set_bridge(self, mailbox: str, friend_key: bytes, at: float) -> None:
        """The friend greeted as a bridge: remembered as one, and no longer as a chat app."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO bridges (mailbox, friend_key, since) VALUES (?, ?, ?)",
                (mailbox, friend_key, at),
            )
            self._db.execute(
                "DELETE FROM chat_apps WHERE mailbox = ? AND friend_key = ?", (mailbox, friend_key)
            )

    def forget_kind(self, mailbox: str, friend_key: bytes) -> None:
        """The friendship ended: whatever the friend was is forgotten (a new one starts unknown)."""
        with self._db:
            self._db.execute("BEGIN")
            for table in ("bridges", "chat_apps"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE mailbox = ? AND friend_key = ?",  # noqa: S608 (two fixed names)
                    (mailbox, friend_key),
                )

    def close(self) -> None:
        self._db.close()
