"""A user's Tox profile: the file on disk (one per local user, readable by the service only) and
the toxcore node opened from it."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, User
from ..files import StateError, replace_file, state_subdir
from .errors import ToxLoadError
from .node import ToxNode
from .options import ToxOptions

OFFLINE = ToxOptions(udp=False, local_discovery=False)  # binds no port: enough to read or make a profile


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
        raise ProfileError(
            f"cannot read Tox profile {path}: {e.strerror} (it must belong to the user "
            "toxbridge runs as, mode 0600: chown it, or run toxbridge as its owner)"
        ) from None


def write(path: Path, data: bytes) -> None:
    """Replace the profile atomically, mode 0600."""
    state_subdir(path.parent.parent, path.parent.name)
    try:
        replace_file(path, data, 0o600)
    except OSError as e:
        raise ProfileError(f"cannot write Tox profile {path}: {e.strerror}") from None


def tox_options(config: Config, start_port: int | None = None) -> ToxOptions:
    tox = config.tox
    return ToxOptions(
        udp=tox.udp,
        ipv6=tox.ipv6,
        local_discovery=tox.local_discovery,
        start_port=start_port or tox.port_range[0],
        end_port=tox.port_range[1],
        proxy_type=tox.proxy.type,
        proxy_host=tox.proxy.host,
        proxy_port=tox.proxy.port,
    )


def node_from_profile(path, savedata: bytes | None, options: ToxOptions, name: str = "") -> ToxNode:
    try:
        return ToxNode(options, savedata, name=name)
    except ToxLoadError as e:
        raise ProfileError(
            f"{path} is not a usable Tox profile ({e}); restore it from a backup, or move it away "
            "to create a new identity (friends will have to add the new Tox ID)"
        ) from None


def ensure_profile(config: Config, user: User) -> tuple[bytes, bool]:
    """The user's Tox ID, creating the profile (0600) if there is none. Returns (address, created)."""
    path = profile_path(config.state_dir, user.mailbox)
    savedata = read(path)
    node = node_from_profile(path, savedata, OFFLINE)
    try:
        if savedata is None:
            write(path, node.savedata())
        return node.address, savedata is None
    finally:
        node.close()


def read_address(config: Config, user: User) -> bytes | None:
    """The user's Tox ID from their profile; None when there is no profile yet."""
    path = profile_path(config.state_dir, user.mailbox)
    savedata = read(path)
    if savedata is None:
        return None
    node = node_from_profile(path, savedata, OFFLINE)
    try:
        return node.address
    finally:
        node.close()
