"""A transfer arriving from a friend, kept in a partial file in the state directory: a broken
transfer resumes from it when the sender retries (same file_id, toxcore seek), and the mail is
delivered from it, so a big mail is never whole in memory.

Partials (one for the state directory's `partial/`, shared by every identity) keeps the bytes
of partial files within bounds: per friend, in total, and a free-space margin, and keeps the
hash state of each cancelled transfer while the bridge runs, so a re-offer resumes without
reading the file again (docs/how-it-works.md, "Partial files")."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import wire

READ_SIZE = 1 << 20
BLOCK = 4096  # a partial file costs at least one block (and an inode): tiny offers count too

log = logging.getLogger("toxbridge.receiver")


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
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)

    def open(self, earlier: Incoming | None = None) -> int:
        """Open the partial file, keeping what an earlier attempt left; returns where to resume.

        `earlier` is that attempt's state kept in memory (Partials.release): its hash and parser
        go on where they stopped. Without it (a partial of an earlier run) the file is read and
        hashed again, once per partial per run."""
        # At most size - 1 bytes are kept: toxcore cannot seek to the very end, and a complete
        # file is left only by a bridge killed before it delivered (then one byte comes again).
        keep = self.size - 1
        try:
            on_disk = self.path.stat().st_size if self.path.exists() else -1
            if earlier is not None and earlier.size == self.size and 0 < earlier.received == on_disk <= keep:
                self.received, self.hasher, self.parser = earlier.received, earlier.hasher, earlier.parser
            elif 0 <= on_disk <= self.size:
                with open(self.path, "rb") as old:
                    while self.received < keep and (chunk := old.read(min(READ_SIZE, keep - self.received))):
                        self.take(chunk)
        except (OSError, wire.WireError):
            self.received = 0
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
        self.received += len(data)

    @property
    def eight_bit(self) -> bool:
        """A message byte over 127 (counted after inflating): Dovecot gets BODY=8BITMIME."""
        return self.parser.eight_bit

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def inflate_file(path: Path, offset: int, target: Path, raw_head: bytes) -> bytes:
    """Write the zlib stream that starts at `offset` in `path` inflated to `target`. Only for a
    partial whose hash matched and whose parser saw it inflate to its announced size. Returns
    the SHA-256 of `raw_head` + the inflated message: the file_id of the same mail sent raw."""
    inflater = zlib.decompressobj()
    digest = hashlib.sha256(raw_head)
    with open(path, "rb") as source, open(target, "wb") as out:
        source.seek(offset)
        while chunk := source.read(READ_SIZE):
            while chunk:
                piece = inflater.decompress(chunk, wire.INFLATE_STEP)
                digest.update(piece)
                out.write(piece)
                chunk = inflater.unconsumed_tail
    return digest.digest()


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as spool:
        spool.seek(offset)
        return spool.read(length)


def charge(size: int) -> int:
    """The room a partial file of `size` bytes is counted for: whole blocks, at least one."""
    return max(BLOCK, -(-size // BLOCK) * BLOCK)


@dataclass(eq=False)
class _Entry:
    peer: str  # the friend's public key, hex (the file name's first part)
    charged: int  # idle: charge(bytes on disk); arriving: charge(the size offered)
    mtime: float
    arriving: bool = False
    state: Incoming | None = None  # the hash state of the transfer that left it, this run


class Partials:
    """The partial files under `root` (ROOT/MAILBOX/PEERKEY-FILEID), indexed in memory.

    An offer is admitted only if its full size fits: first the friend's own oldest idle
    partials are dropped to keep it within `per_friend`; then the oldest idle partials of
    anyone for `total` and for `min_free` bytes left free on the file system. A transfer
    still arriving keeps its room; an offer that does not fit even so is refused (452 4.3.1)."""

    def __init__(
        self,
        root: Path,
        per_friend: int,
        total: int,
        min_free: int,
        free_space: Callable[[Path], int] | None = None,
    ) -> None:
        self.root, self.per_friend, self.total, self.min_free = root, per_friend, total, min_free
        self._free_space = free_space or _free_space
        self._entries: dict[Path, _Entry] = {}

    def scan(self) -> None:
        """Index what earlier runs left (at start); transfers arriving now are kept as they are."""
        for path in self.root.glob("*/*"):
            if path in self._entries:
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            self._entries[path] = _Entry(path.name.split("-")[0], charge(st.st_size), st.st_mtime)

    def earlier(self, path: Path) -> Incoming | None:
        """The hash state an earlier transfer to `path` left in this run, if any."""
        entry = self._entries.get(path)
        return entry.state if entry is not None and not entry.arriving else None

    def admit(self, peer: str, path: Path, size: int) -> str | None:
        """Make room for an offer of `size` bytes to `path`, or say why there is none. An
        admitted offer holds its room until release or forget."""
        need = charge(size)
        old = self._entries.pop(path, None)  # the offer's own partial is not dropped, but resumed
        have = old.charged if old is not None else 0
        dropped = self._make_room(
            [(p, e) for p, e in self._entries.items() if e.peer == peer], need, self.per_friend
        )
        dropped |= self._make_room(list(self._entries.items()), need, self.total)
        reason = None
        if sum(e.charged for e in self._entries.values() if e.peer == peer) + need > self.per_friend:
            reason = "your mail arriving now takes all the room this household keeps for you"
        elif sum(e.charged for e in self._entries.values()) + need > self.total:
            reason = "mail arriving now takes all the room for partial transfers"
        else:
            while self._free_space(self.root) - (need - have) < self.min_free:
                idle = self._oldest_idle(list(self._entries.items()))
                if idle is None:
                    reason = "too little free disk space"
                    break
                self._drop(idle)
                dropped.add(idle)
        if dropped:
            log.info("partial transfers: dropped the %d oldest to make room for a new one", len(dropped))
        if reason is not None:
            if old is not None:
                self._entries[path] = old
            return reason
        self._entries[path] = _Entry(peer, need, time.time(), arriving=True)
        return None

    def release(self, path: Path, inc: Incoming | None = None) -> None:
        """The transfer to `path` ended and its file stays; `inc` keeps its hash state."""
        try:
            size = path.stat().st_size
        except OSError:
            self._entries.pop(path, None)
            return
        entry = self._entries.get(path)
        peer = entry.peer if entry is not None else path.name.split("-")[0]
        kept = inc if inc is not None and inc.received == size else None
        self._entries[path] = _Entry(peer, charge(size), time.time(), state=kept)

    def forget(self, path: Path) -> None:
        """The file at `path` is gone (delivered, or dropped as broken)."""
        self._entries.pop(path, None)

    def prune(self, max_age: float) -> int:
        """Remove partial files nobody resumed within `max_age` seconds."""
        cutoff = time.time() - max_age
        old = [p for p, e in self._entries.items() if not e.arriving and e.mtime < cutoff]
        for path in old:
            self._drop(path)
        return len(old)

    def _make_room(self, entries: list[tuple[Path, _Entry]], need: int, cap: int) -> set[Path]:
        dropped: set[Path] = set()
        used = sum(e.charged for _, e in entries)
        while used + need > cap:
            idle = self._oldest_idle([(p, e) for p, e in entries if p not in dropped])
            if idle is None:
                break
            used -= self._entries[idle].charged
            self._drop(idle)
            dropped.add(idle)
        return dropped

    @staticmethod
    def _oldest_idle(entries: list[tuple[Path, _Entry]]) -> Path | None:
        idle = [(e.mtime, p) for p, e in entries if not e.arriving]
        return min(idle)[1] if idle else None

    def _drop(self, path: Path) -> None:
        self._entries.pop(path, None)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot remove the partial transfer %s: %s", path, e)


def _free_space(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
