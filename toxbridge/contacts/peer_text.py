"""A stranger's words made safe to print: the text of a friend request, in `toxbridge contacts
pending` and in the bridge's log.

Anyone on Tox can send a friend request with any bytes in it: escape codes that repaint the
operator's terminal, newlines and tabs that fake rows of `contacts pending` or lines of the
log, bidi overrides that turn text around. Shown, every character that is not printable is
escaped as Python writes it (`\\x1b`, `\\n`, `\\u202e`), a backslash is doubled (so an escape
the stranger typed differs from one made here), and the text stops after MAX_CHARS.
"""

from __future__ import annotations

MAX_CHARS = 200
MAX_STORED = 1024  # kept of a request (toxcore allows 1016 bytes); shown cut to MAX_CHARS


def printable(text: str | bytes, limit: int = MAX_CHARS) -> str:
    """`text` on one line of at most `limit` characters (and "…"), nothing in it a terminal obeys."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out: list[str] = []
    length = 0
    for char in text:
        shown = "\\\\" if char == "\\" else char if char.isprintable() else repr(char)[1:-1]
        if length + len(shown) > limit:
            out.append("…")
            break
        out.append(shown)
        length += len(shown)
    return "".join(out)
