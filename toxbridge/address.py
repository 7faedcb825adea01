"""Tox mail addresses: `<76 hex>@tox` (full Tox ID) and `<64 hex>@tox` (a friend's public key).

Pure functions, no I/O. Letter case is ignored: Dovecot lowercases user names, and people copy
Tox IDs in upper case from their clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOX_DOMAIN = "tox"
_HEX = re.compile(r"[0-9A-Fa-f]*")
PUBLIC_KEY_SIZE = 32
ADDRESS_SIZE = 38  # public key 32 + nospam 4 + checksum 2


class AddressError(ValueError):
    """Not a valid Tox mail address; the text says why."""


def tox_checksum(key_and_nospam: bytes) -> bytes:
    """Checksum toxcore appends to a Tox ID: the 36 bytes XOR-folded into 2."""
    check = bytearray(2)
    for i, byte in enumerate(key_and_nospam):
        check[i % 2] ^= byte
    return bytes(check)


def tox_id_from_hex(text: str) -> bytes:
    """A 76-hex Tox ID to its 38 bytes, checksum verified."""
    raw = unhex(text, ADDRESS_SIZE)
    if tox_checksum(raw[:36]) != raw[36:]:
        raise AddressError("Tox ID checksum does not match (a typo in the ID?)")
    return raw


def unhex(text: str, size: int) -> bytes:
    """Exactly 2*size hex digits to bytes (bytes.fromhex alone would skip inner spaces)."""
    if len(text) != 2 * size:
        raise AddressError(f"expected {2 * size} hex digits, got {len(text)}")
    if not _HEX.fullmatch(text):
        raise AddressError("not hexadecimal")
    return bytes.fromhex(text)


@dataclass(frozen=True)
class ToxAddress:
    """A parsed `…@tox` address. `tox_id` is None when only the public key was given."""

    public_key: bytes
    tox_id: bytes | None

    @property
    def mailbox(self) -> str:
        """The canonical address: the public key in lower-case hex at the tox domain."""
        return f"{self.public_key.hex()}@{TOX_DOMAIN}"


def split_address(address: str) -> tuple[str, str]:
    """`local@domain` → (local, domain); the domain is lowercased. Raises AddressError."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"not an e-mail address: {address!r}")
    return local, domain.lower()


def is_tox_address(address: str) -> bool:
    """True when the address is in the tox domain (valid or not)."""
    _, at, domain = address.rpartition("@")
    return bool(at) and domain.lower() == TOX_DOMAIN


def parse_tox_address(address: str) -> ToxAddress:
    """Parse `<76 hex>@tox` or `<64 hex>@tox` (any case). Raises AddressError."""
    local, domain = split_address(address)
    if domain != TOX_DOMAIN:
        raise AddressError(f"not in the {TOX_DOMAIN} domain: {address!r}")
    if len(local) == 2 * ADDRESS_SIZE:
        tox_id = tox_id_from_hex(local)
        return ToxAddress(public_key=tox_id[:PUBLIC_KEY_SIZE], tox_id=tox_id)
    if len(local) == 2 * PUBLIC_KEY_SIZE:
        return ToxAddress(public_key=unhex(local, PUBLIC_KEY_SIZE), tox_id=None)
    raise AddressError(f"a Tox address has 76 hex digits (Tox ID) or 64 (public key), not {len(local)}")
