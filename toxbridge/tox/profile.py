"""Tox profiles on disk: one file per local user, readable by the service only."""

from __future__ import annotations

import os
from pathlib import Path


class ProfileError(OSError):
    """A profile or the state directory cannot be used; the text says which and why."""


def state_subdir(state_dir: Path, name: str) -> Path:
    """A directory under the state directory, created 0700 (with the state directory)."""
    path = state_dir / name
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise ProfileError(f"cannot create {path}: {e.strerror}") from None
    return path


def profile_path(state_dir: Path, mailbox: str) -> Path:
    return state_dir / "profiles" / f"{mailbox}.tox"


def read(path: Path) -> bytes | None:
    """The profile's bytes, or None when there is none yet."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ProfileError(f"cannot read Tox profile {path}: {e.strerror} (it must belong to the user "
                           "toxbridge runs as, mode 0600: chown it, or run toxbridge as its owner)") from None


def write(path: Path, data: bytes) -> None:
    """Replace the profile atomically (temp file, fsync, rename), mode 0600."""
    state_subdir(path.parent.parent, path.parent.name)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise ProfileError(f"cannot write Tox profile {path}: {e.strerror}") from None
