"""Following the contacts file: both processes (`toxbridge run` and `toxbridge routes`) reread it
when it changes, so a new contact routes and befriends without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from .book import ContactBook, ContactsError
from .book import load as load_contacts

# How often the contacts file is checked for changes (a stat; reread only when it changed).
POLL_SECONDS = 1.0


def file_state(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def reload(config: Config, log: logging.Logger) -> ContactBook | None:
    """The contacts as the file now says, or None (logged) when an edit broke it: the previous
    ones stay in use rather than an empty book, which would send contacts' mail off Tox."""
    try:
        book = load_contacts(config.contacts, config.mailboxes)
    except ContactsError as e:
        log.error("contacts not reloaded, the previous ones stay in use: %s", e)
        return None
    log.info("contacts reloaded from %s: %d entries", config.contacts, len(book.contacts))
    return book


async def follow(
    config: Config, log: logging.Logger, on_change: Callable[[ContactBook], None], every: Callable[[], None]
) -> None:
    """Each POLL_SECONDS: on a change, the new book to on_change; then every()."""
    seen = file_state(config.contacts)
    while True:
        await asyncio.sleep(POLL_SECONDS)
        state = file_state(config.contacts)
        if state != seen:
            seen = state
            book = reload(config, log)
            if book is not None:
                on_change(book)
        every()
