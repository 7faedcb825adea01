"""Tox profiles on disk: one file per local user, readable by the service only."""

from __future__ import annotations

from pathlib import Path

from ..files import StateError, replace_file, state_subdir


class ProfileError(StateError):
    """A profile cannot be used; the text says which and why."""


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
    """Replace the profile atomically, mode 0600."""
    state_subdir(path.parent.parent, path.parent.name)
    try:
        replace_file(path, data, 0o600)
    except OSError as e:
        raise ProfileError(f"cannot write Tox profile {path}: {e.strerror}") from None
