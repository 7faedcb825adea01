"""What the bridge keeps on disk, written one way: private directories under the state
directory, files replaced atomically, SQLite databases made durable.

Regenerated files are written to a temp file beside them, fsynced and renamed over the old one,
then the directory is fsynced: a reader, or a power cut, sees the old file or the new one, never a
part of either.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path


class StateError(OSError):
    """The state directory or a file in it cannot be used; the text says which and why."""


def state_subdir(state_dir: Path, name: str) -> Path:
    """A directory under the state directory, created 0700 (with the state directory)."""
    path = state_dir / name
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise StateError(f"cannot create {path}: {e.strerror}") from None
    return path


def replace_file(path: Path, data: bytes, mode: int | None = None, keep_owner: bool = False) -> None:
    """Replace `path` with `data` in one step. The new file gets `mode` (None: what the umask
    leaves of 0666); with keep_owner, an existing file's mode and owner carry over instead.
    An OSError names `path`, and no temp file is left behind."""
    owner = None
    if keep_owner:
        try:
            old = path.stat()
            mode, owner = stat.S_IMODE(old.st_mode), (old.st_uid, old.st_gid)
        except FileNotFoundError:
            pass
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666 if mode is None else mode
        )
        with open(fd, "wb") as out:
            if mode is not None:
                os.fchmod(fd, mode)  # exactly this mode, whatever the umask
            if owner is not None:
                os.fchown(fd, *owner)
            out.write(data)
            out.flush()
            os.fsync(fd)
        os.replace(temp, path)
        fsync_directory(path.parent)
    except BaseException as e:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def fsync_directory(directory: Path) -> None:
    """A rename or a new file in `directory` survives a power cut once this returns."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_database(path: Path | str, schema: tuple[str, ...]) -> sqlite3.Connection:
    """A SQLite database shared by the daemon and the CLI: autocommit (each write is one
    transaction), WAL with synchronous=FULL (a write is on disk when it returns), a writer waits
    up to 10 s for another's lock. `schema` is CREATE ... IF NOT EXISTS statements."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for statement in schema:
        db.execute(statement)
    return db
