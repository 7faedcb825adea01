"""What outgoing mail sheds before it leaves over Tox. Pure: bytes in, bytes out, no I/O.

Removed: the Received: fields at the very top of the header (this household's own Postfix and
filters prepend them; they name the sender's laptop, its LAN address and the Pi), and every field
whose name is listed (User-Agent, X-Originating-IP, ...), each with its folded continuation lines.
Every other byte of the header and the body stays as it was: line ends (CRLF, LF, mixed), 8-bit
bytes, folding, order.

The header is the leading run of field lines (`name:` or, obsolete, `name WSP :`) and their
continuations (lines starting with SP or HT). It ends at the blank line, at the end of the
message, or at the first line that is neither: as in Postfix and Python's parser, such a line
begins the body, and nothing in the body is ever touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import Privacy

# RFC 5322 field-name: printable US-ASCII except ":"; obs-optional allows WSP before the colon.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_RECEIVED = "Received"


@dataclass(frozen=True)
class Stripped:
    """The message as what is left of its header plus the untouched rest (a view: a big body
    is not copied)."""

    head: bytes
    rest: memoryview
    removed: tuple[tuple[str, int], ...] = ()  # (field name, how many), in order of first removal

    @property
    def parts(self) -> tuple:
        return (self.head, self.rest) if self.head else (self.rest,)

    def summary(self) -> str:
        """For a log line: names and counts only, never a value."""
        return ", ".join(f"{name} x{count}" for name, count in self.removed) or "nothing"


def strip(message: bytes, privacy: Privacy) -> Stripped:
    listed = {name.lower(): name for name in privacy.strip_headers}
    if not privacy.strip_received and not listed:
        return Stripped(b"", memoryview(message))
    fields, end = _fields(message)
    kept: list[tuple[int, int]] = []
    removed: dict[str, int] = {}
    top = privacy.strip_received  # still inside the leading block of Received fields
    for start, stop, name in fields:
        lower = name.lower()
        if top and lower == "received":
            label: str | None = _RECEIVED
        else:
            top = False
            label = listed.get(lower)
        if label is None:
            kept.append((start, stop))
        else:
            removed[label] = removed.get(label, 0) + 1
    if not removed:
        return Stripped(b"", memoryview(message))
    head = b"".join(message[start:stop] for start, stop in kept)
    return Stripped(head, memoryview(message)[end:], tuple(removed.items()))


def _fields(message: bytes) -> tuple[list[tuple[int, int, str]], int]:
    """The header's fields as (start, stop, name) with continuation lines included, and the
    offset where the header ends (the blank line or first non-field line, kept by the caller)."""
    fields: list[tuple[int, int, str]] = []
    pos = 0
    while pos < len(message):
        newline = message.find(b"\n", pos)
        stop = len(message) if newline < 0 else newline + 1
        first = message[pos:pos + 1]
        if first in (b" ", b"\t") and fields:
            start, _, name = fields[-1]
            fields[-1] = (start, stop, name)
        else:
            match = _FIELD.match(message, pos, stop)
            if match is None:
                break  # the blank line, or a line that begins the body
            fields.append((pos, stop, match.group(1).decode("ascii")))
        pos = stop
    return fields, pos
