"""What outgoing mail sheds before it leaves over Tox. Pure: bytes in, bytes out, no I/O.

Removed: the Received: fields at the very top of the header (this household's own Postfix and
filters prepend them; they name the sender's laptop, its LAN address and the Pi), and every field
whose name is listed (User-Agent, X-Originating-IP, ...), each with its folded continuation lines.
Every other byte of the header and the body stays as it was: line ends (CRLF, LF, mixed), 8-bit
bytes, folding, order.

The header is read by mail/headers.py, as the receiving household's Dovecot will read it: it ends
at the empty line (a line that is no field does not end it), and nothing after it is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Privacy
from .headers import Field, scan

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
    header = scan(message)
    gone: list[Field] = []
    removed: dict[str, int] = {}
    top = privacy.strip_received  # still inside the leading block of Received fields
    for field in header.fields:
        name = field.key.decode("ascii", "replace")
        if top and name == "received":
            label: str | None = _RECEIVED
        else:
            top = False
            label = listed.get(name)
        if label is not None:
            gone.append(field)
            removed[label] = removed.get(label, 0) + 1
    if not removed:
        return Stripped(b"", memoryview(message))
    return Stripped(header.without(gone), memoryview(message)[header.end :], tuple(removed.items()))
