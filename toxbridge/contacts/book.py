"""The household's contacts book: who is reachable over Tox under which ordinary addresses.

A YAML list, one entry per person:

    - name: Tarek
      addresses: [tarek@example.org]
      tox_id: 76 hex digits (a full Tox ID), or 64 (the public key only)
      users: [mom]            # local mailboxes this contact serves; all when left out

Parsed into frozen objects; every error names the file and line. No I/O beyond reading the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..address import ADDRESS_SIZE, PUBLIC_KEY_SIZE, AddressError, is_tox_address, tox_id_from_hex, unhex
from ..config import ConfigError, LineDict, load_yaml

KEYS = ("name", "addresses", "tox_id", "users")
_ATOM = r'[^\s@<>()\[\],;:"\\.]+'  # UTF-8 letters are fine (SMTPUTF8); separators are not
_ADDRESS = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})+$")


class ContactsError(ConfigError):
    """The contacts file cannot be used; the text names the file and line."""


@dataclass(frozen=True)
class Contact:
    name: str
    addresses: tuple[str, ...]  # lower case
    public_key: bytes
    tox_id: bytes | None = None  # the full ID when known: only a full ID can carry a friend request
    users: tuple[str, ...] = ()  # mailboxes served; empty = every user
    line: int = field(default=0, compare=False)

    def serves(self, mailbox: str) -> bool:
        return not self.users or mailbox in self.users

    def as_yaml(self) -> dict:
        """The entry as the file holds it (for writing a new one)."""
        entry: dict = {
            "name": self.name,
            "addresses": list(self.addresses),
            "tox_id": (self.tox_id or self.public_key).hex().upper(),
        }
        if self.users:
            entry["users"] = list(self.users)
        return entry


def normalise_address(address: str) -> str:
    """Lower case, as Postfix asks its tables and as the book keeps addresses."""
    return address.strip().lower()


# Local parts Postfix never splits at recipient_delimiter (split_addr.c), and with "-" among the
# delimiters (owner_request_special, on by default) neither owner-* nor *-request.
_UNSPLIT = ("postmaster", "mailer-daemon", "double-bounce")


def strip_extension(address: str, delimiters: str) -> str:
    """The address without its extension, as Postfix strips it for table lookups: the local part
    (up to the last @) ends at the first of the `delimiters` characters, unless that would leave
    it empty or it is one Postfix keeps whole. An address without an extension comes back as is."""
    local, at, domain = address.rpartition("@")
    if not at or not delimiters or local.lower() in _UNSPLIT:
        return address
    if "-" in delimiters and (local.lower().startswith("owner-") or local.lower().endswith("-request")):
        return address
    cut = next((i for i, c in enumerate(local) if c in delimiters), -1)
    if cut <= 0:
        return address
    return f"{local[:cut]}@{domain}"


def check_address(address: str) -> str:
    """A contact's ordinary address, normalised; raises ValueError saying what is wrong."""
    address = normalise_address(address)
    if is_tox_address(address):
        raise ValueError(f"{address}: @tox addresses reach a Tox ID directly and need no contact")
    if not _ADDRESS.match(address):
        raise ValueError(f"{address!r} is not an e-mail address (name@domain.example)")
    return address


def parse_tox_id(text: str) -> tuple[bytes, bytes | None]:
    """76 hex (full Tox ID, checksum verified) or 64 hex (public key) → (public key, full ID or None)."""
    text = text.strip()
    if len(text) == 2 * ADDRESS_SIZE:
        full = tox_id_from_hex(text)
        return full[:PUBLIC_KEY_SIZE], full
    if len(text) == 2 * PUBLIC_KEY_SIZE:
        return unhex(text, PUBLIC_KEY_SIZE), None
    raise AddressError(f"a Tox ID has 76 hex digits (or 64 for a public key), not {len(text)}")


@dataclass(frozen=True)
class ContactBook:
    contacts: tuple[Contact, ...] = ()
    source: str = ""
    _by_address: dict[str, Contact] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # frozen: the index is set once, the way dataclass sets fields
        object.__setattr__(self, "_by_address", {a: c for c in self.contacts for a in c.addresses})

    def owner(self, address: str) -> Contact | None:
        """The contact that has this address, whoever it serves."""
        return self._by_address.get(normalise_address(address))

    def for_user(self, mailbox: str) -> list[Contact]:
        return [c for c in self.contacts if c.serves(mailbox)]

    def with_key(self, public_key: bytes) -> list[Contact]:
        return [c for c in self.contacts if c.public_key == public_key]

    def find(self, what: str) -> list[Contact]:
        """Entries matching a name (any case), an address, or a key/Tox ID (hex prefix of 8+ digits)."""
        what = what.strip()
        lowered = what.lower()
        hexed = lowered if len(lowered) >= 8 and re.fullmatch(r"[0-9a-f]+", lowered) else None
        return [
            c
            for c in self.contacts
            if c.name.lower() == lowered
            or lowered in c.addresses
            or (hexed and (c.tox_id or c.public_key).hex().startswith(hexed))
        ]


def load(path: Path, mailboxes: tuple[str, ...]) -> ContactBook:
    """The book at `path`; a file that does not exist is an empty book."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ContactBook((), str(path))
    except OSError as e:
        raise ContactsError(f"{path}: cannot read the contacts file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ContactsError(f"{path}: the contacts file is not UTF-8") from None
    return parse(text, str(path), mailboxes)


def parse(text: str, source: str, mailboxes: tuple[str, ...]) -> ContactBook:
    try:
        data = load_yaml(text, source)
    except ConfigError as e:
        raise ContactsError(str(e)) from None
    if data is None:
        return ContactBook((), source)
    if not isinstance(data, list):
        raise ContactsError(f"{source}: the contacts file must be a list of entries (- name: ...)")
    contacts = []
    seen: dict[str, Contact] = {}
    for index, item in enumerate(data):
        contact = _entry(item, source, index, mailboxes)
        for address in contact.addresses:
            if address in seen:
                raise ContactsError(
                    f"{source}: line {contact.line}: {address} is already the address of "
                    f"{seen[address].name!r} (line {seen[address].line})"
                )
            seen[address] = contact
        contacts.append(contact)
    return ContactBook(tuple(contacts), source)


def _entry(item, source: str, index: int, mailboxes: tuple[str, ...]) -> Contact:
    if not isinstance(item, LineDict):
        raise ContactsError(f"{source}: entry {index + 1}: expected name, addresses, tox_id (a mapping)")
    line = item.line

    def fail(key: str, message: str) -> ContactsError:
        return ContactsError(f"{source}: line {item.lines.get(key, line)}: {key}: {message}")

    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(KEYS)})")
    for key in ("name", "tox_id"):
        if key not in item:
            raise ContactsError(f"{source}: line {line}: entry has no {key}")
        if not isinstance(item[key], str) or not item[key].strip():
            raise fail(key, f"expected a non-empty text, got {item[key]!r}")
    addresses = item.get("addresses", [])
    if isinstance(addresses, str):
        addresses = [addresses]
    if not isinstance(addresses, list):
        raise fail("addresses", "expected a list of e-mail addresses")
    checked = []
    for address in addresses:
        try:
            checked.append(check_address(str(address)))
        except ValueError as e:
            raise fail("addresses", str(e)) from None
    try:
        public_key, tox_id = parse_tox_id(item["tox_id"])
    except AddressError as e:
        raise fail("tox_id", str(e)) from None
    users = item.get("users", [])
    if isinstance(users, str):
        users = [users]
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise fail("users", "expected a list of mailbox names")
    if "users" in item and not users:
        raise fail("users", "an empty list serves nobody; leave `users` out to serve every user")
    for user in users:
        if user not in mailboxes:
            raise fail("users", f"{user!r} is not a user of this bridge (users: {', '.join(mailboxes)})")
    return Contact(
        item["name"].strip(), tuple(dict.fromkeys(checked)), public_key, tox_id, tuple(users), line
    )
