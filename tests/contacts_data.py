"""What the contacts tests share: mailboxes, Tox IDs, a parser and an entry maker."""

from __future__ import annotations

from toxbridge.address import tox_checksum
from toxbridge.contacts import book
from toxbridge.contacts.book import Contact, ContactBook

MAILBOXES = ("mom", "dad", "kid")


def full_id(byte: int, nospam: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A valid 38-byte Tox ID whose key is `byte` repeated (a0.. keeps YAML from reading a number)."""
    key = bytes([byte]) * 32
    return key + nospam + tox_checksum(key + nospam)


ID_A, ID_B, ID_C, ID_D = (full_id(b) for b in (0xA1, 0xB2, 0xC3, 0xD4))


def parse(text: str) -> ContactBook:
    return book.parse(text, "contacts.yaml", MAILBOXES)


def contact(name: str, tox_id: bytes, *addresses: str, users: tuple[str, ...] = ()) -> Contact:
    return Contact(name, tuple(addresses), tox_id[:32], tox_id, users)
