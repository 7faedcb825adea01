"""A transfer arriving from a friend, kept in a partial file in the state directory: a broken
transfer resumes from it when the sender retries (same file_id, toxcore seek), and the mail is
delivered from it, so a big mail is never whole in memory."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import wire

READ_SIZE = 1 << 20


@dataclass(eq=False)
class Incoming:
    friend: int
    number: int
    file_id: bytes
    size: int
    path: Path
    parser: wire.PayloadParser
    file: BinaryIO | None = None
    received: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)  # the file_id to check, as bytes arrive
    eight_bit: bool = False
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)

    def open(self) -> int:
        """Open the partial file, keeping what an earlier attempt left; returns where to resume."""
        # At most size - 1 bytes are kept: toxcore cannot seek to the very end, and a complete
        # file is left only by a bridge killed before it delivered (then one byte comes again).
        keep = self.size - 1
        try:
            if self.path.exists() and self.path.stat().st_size <= self.size:
                with open(self.path, "rb") as old:
                    while self.received < keep and (chunk := old.read(min(READ_SIZE, keep - self.received))):
                        self.take(chunk)
        except (OSError, wire.WireError):
            self.received, self.eight_bit = 0, False
            self.parser = wire.PayloadParser(self.parser.max_message)
            self.hasher = hashlib.sha256()
        self.file = open(self.path, "r+b" if self.received else "wb", buffering=READ_SIZE)
        self.file.seek(self.received)
        self.file.truncate()
        return self.received

    def take(self, data: bytes) -> None:
        """Account for bytes that arrived (the caller writes them); WireError for a bad envelope."""
        self.parser.feed(data)  # refuses a bad envelope before the rest arrives
        self.hasher.update(data)
        self.eight_bit = self.eight_bit or not data.isascii()
        self.received += len(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as spool:
        spool.seek(offset)
        return spool.read(length)


def prune_partials(directory: Path, max_age: float) -> int:
    """Remove partial transfers nobody resumed within `max_age` seconds."""
    removed = 0
    cutoff = time.time() - max_age
    for path in directory.glob("*/*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
