"""Editing the contacts file without losing what people wrote in it.

PyYAML cannot write comments back, so edits are made on the text: a new entry is appended, a
removed entry's lines are cut. The result is parsed again and must hold exactly the entries
intended, or nothing is written. The file is replaced atomically, keeping its mode and owner,
under a lock so two editors do not interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

from ..files import replace_file
from .book import Contact, ContactBook, ContactsError
from .book import parse as parse_book

NEW_FILE_HEADER = """\
# toxbridge contacts: people this household reaches over Tox, under their ordinary addresses.
# Edit with `toxbridge contacts add|remove` (or by hand: the running bridge rereads this file).
#   - name: Tarek
#     addresses: [tarek@example.org]
#     tox_id: 76 hex digits (full Tox ID) or 64 (public key only)
#     users: [mom]    # local mailboxes this contact serves; all when left out
"""
NEW_FILE_MODE = 0o644


def added(text: str, source: str, mailboxes: tuple[str, ...], contact: Contact) -> str:
    """The file's text with `contact` appended; comments and layout of the rest untouched."""
    before = parse_book(text, source, mailboxes)
    entry = yaml.safe_dump([contact.as_yaml()], sort_keys=False, allow_unicode=True, default_flow_style=None)
    base = text if text.strip() else NEW_FILE_HEADER
    if base and not base.endswith("\n"):
        base += "\n"
    result = base + entry
    _verify(result, source, mailboxes, before.contacts + (contact,))
    return result


def removed(text: str, source: str, mailboxes: tuple[str, ...], gone: Contact) -> str:
    """The file's text without the entry `gone` (its own lines, comments inside it included)."""
    before = parse_book(text, source, mailboxes)
    lines = text.splitlines(keepends=True)
    starts = [c.line for c in before.contacts]
    # Equal entries can repeat (same name and key, no address): the line tells them apart.
    matches = [i for i, c in enumerate(before.contacts) if c == gone and gone.line in (0, c.line)]
    if len(matches) != 1:
        raise ContactsError(
            f"{source}: cannot tell which entry {gone.name!r} is (changed meanwhile?); try again"
        )
    index = matches[0]
    first = starts[index] - 1
    end = starts[index + 1] - 1 if index + 1 < len(starts) else len(lines)
    while end > first + 1 and _is_filler(lines[end - 1]):  # comments before the next entry stay
        end -= 1
    result = "".join(lines[:first] + lines[end:])
    _verify(result, source, mailboxes, before.contacts[:index] + before.contacts[index + 1 :])
    return result


def _is_filler(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _verify(text: str, source: str, mailboxes: tuple[str, ...], expected: tuple[Contact, ...]) -> None:
    try:
        got = parse_book(text, source, mailboxes).contacts
    except ContactsError:
        if len(expected) == len(_parsed_entries(text)):  # the edit is right, the entry is not
            raise
        got = None
    if got != expected:
        raise ContactsError(
            f"{source}: its layout does not allow a safe automatic edit "
            "(flow style or unusual indentation?); edit it by hand"
        )


def _parsed_entries(text: str) -> list:
    try:
        return yaml.safe_load(text) or []
    except yaml.YAMLError:
        return []


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock on the file's directory: editors of the contacts file take turns."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise ContactsError(f"{path}: cannot read the contacts file: {e}") from None


def edit(path: Path, mailboxes: tuple[str, ...], change) -> ContactBook:
    """Apply change(text, source) -> new text to the file, safely; returns the new book."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        text = change(read_text(path), str(path))
        replace_file(path, text.encode("utf-8"), NEW_FILE_MODE, keep_owner=True)
    return parse_book(text, str(path), mailboxes)
