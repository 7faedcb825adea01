"""The one reader of a mail's header: raw bytes in, fields with their exact offsets out. Pure.

Every check that reads a header reads it here (privacy, the sender check, the receiving bridge's
trust headers), and it reads the header as Dovecot's message-header-parser (lib-mail) does:
Dovecot stores the mail and IMAP shows its header as Dovecot read it, so a check that reads it
otherwise judges a header no one sees (DESIGN.md, decision 9).

- A line ends at LF; up to two CRs just before the LF belong to the line end, any other CR is
  a byte (message-header-parser takes one; Dovecot's LMTP had already dropped a CR before a
  CRLF on the way in: measured with Dovecot 2.3.19 on maildir, so `\r\r\n` is an empty line).
- The header ends at the first empty line (CRLF, or LF alone), or where the bytes end.
- A line that begins with SP or HTAB continues the field before it.
- Every other line begins a field, with a colon or without: a line without one does not end the
  header (its whole text is the field's name, and it has no value).
- The name is what comes before the first colon, minus the SP and HTAB just before it (obsolete
  syntax, RFC 5322 4.5.3: `From : x` is a From field); nothing else is taken off.
- Names compare case-insensitively, up to a NUL (Dovecot compares them as C strings).

Fields are contiguous: the header's bytes are exactly its fields', one after the other, so
`Header.without` cuts fields out byte for byte and leaves every other byte as it was.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_FTEXT = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # a field name as RFC 5322 3.6.8 spells it
_ADDR_SPEC = re.compile(r"[^\s@<>()\[\],;:\\\"]+@[^\s@<>()\[\],;:\\\"]+")


@dataclass(frozen=True)
class Field:
    """One field, continuation lines included, as offsets into the scanned bytes."""

    start: int  # its first byte
    name_end: int  # the name is data[start:name_end]
    value_start: int  # just after the colon (without a colon: name_end)
    value_end: int  # before the line end (LF and the CRs before it) of its last line
    end: int  # after that line end: data[start:end] is the whole field
    name: bytes
    value: bytes  # data[value_start:value_end]: raw, folding line ends kept
    colon: bool

    @property
    def key(self) -> bytes:
        """The name as Dovecot compares it: lower case, cut at a NUL."""
        return self.name.split(b"\0", 1)[0].lower()

    def is_named(self, name: str) -> bool:
        return self.key == name.lower().encode("ascii")


@dataclass(frozen=True)
class Header:
    data: bytes  # what was scanned: the header and whatever followed it
    fields: tuple[Field, ...]
    end: int  # where the header ends: the empty line's offset, or len(data)
    complete: bool  # an empty line ended it (False: the data ended inside the header)

    def named(self, name: str) -> list[Field]:
        return [f for f in self.fields if f.is_named(name)]

    def without(self, drop: Iterable[Field]) -> bytes:
        """The header's bytes without the fields in `drop` (the empty line not included)."""
        gone = {f.start for f in drop}
        return b"".join(self.data[f.start : f.end] for f in self.fields if f.start not in gone)


def scan(data: bytes) -> Header:
    fields: list[Field] = []
    pos, size = 0, len(data)
    while pos < size:
        newline = data.find(b"\n", pos)
        end = size if newline < 0 else newline + 1
        content_end = end if newline < 0 else newline
        for _ in range(2 if newline >= 0 else 0):  # the line end's CRs
            if content_end > pos and data[content_end - 1] == 0x0D:
                content_end -= 1
        if data[pos] in b" \t" and fields:
            last = fields[-1]
            fields[-1] = Field(
                last.start,
                last.name_end,
                last.value_start,
                content_end,
                end,
                last.name,
                data[last.value_start : content_end],
                last.colon,
            )
        elif content_end == pos:  # a line end alone, and not a continuation: the empty line
            return Header(data, tuple(fields), pos, True)
        else:
            colon = data.find(b":", pos, content_end)
            if colon < 0:
                fields.append(
                    Field(pos, content_end, content_end, content_end, end, data[pos:content_end], b"", False)
                )
            else:
                name = data[pos:colon].rstrip(b" \t")
                fields.append(
                    Field(
                        pos,
                        pos + len(name),
                        colon + 1,
                        content_end,
                        end,
                        name,
                        data[colon + 1 : content_end],
                        True,
                    )
                )
        pos = end
    return Header(data, tuple(fields), size, False)


def unfold(value: bytes) -> bytes:
    """A value on one line: the line ends of its folding taken out (RFC 5322 3.2.2)."""
    return _FOLD.sub(b"", value)


def from_addresses(header: Header) -> list[str]:
    """The addresses in the header's From: fields, lower case, in order; [] when there is none.
    Raw UTF-8 (SMTPUTF8) is read as such; bytes that are not UTF-8 become U+FFFD."""
    values = [unfold(f.value).decode("utf-8", "replace") for f in header.named("From")]
    return [a.lower() for _, a in email.utils.getaddresses(values) if "@" in a]


def sender_defect(header: Header) -> str:
    """Why the header's sender cannot be judged ("" when it can): it needs exactly one From
    field, whose value is addresses and nothing else, and no field before it that another reader
    (a mail client parsing the header itself, Python's email) may take as the header's end or
    as a different field: a name with a NUL, SP, control or 8-bit byte, or a line without a
    colon. A header judged this way shows the same From in IMAP as the check read
    (tests/test_headers_dovecot.py)."""
    if any(b"\0" in f.name for f in header.fields):
        return "a NUL byte in a header field name"
    froms = [i for i, f in enumerate(header.fields) if f.is_named("From")]
    if len(froms) != 1:
        return "the header has no From field" if not froms else f"the header has {len(froms)} From fields"
    the_from = header.fields[froms[0]]
    for f in header.fields[: froms[0]]:
        if not f.colon or not _FTEXT.fullmatch(f.name):
            return "a malformed header field before From (a name without colon, or not printable ASCII)"
    if the_from.name_end + 1 != the_from.value_start:
        return "space between From and its colon"
    if b"\0" in the_from.value:
        return "a NUL byte in the From field"
    value = unfold(the_from.value).decode("utf-8", "replace")
    parsed = email.utils.getaddresses([value])
    if not _balanced(value) or not parsed or not all(_ADDR_SPEC.fullmatch(address) for _, address in parsed):
        return "the From field does not read as mail addresses"
    return ""


def _balanced(value: str) -> bool:
    """Quotes, comments and <…> closed, and after a `>` only space, comments or a comma: where
    Python's email and Dovecot read such a value apart (`<a@x>b@y`, `<a@x`), it is refused."""
    quoted, depth, angle, closed, escaped = False, 0, False, False, False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == "(":
            depth += 1
        elif depth:
            depth -= ch == ")"
        elif ch in " \t\r\n":
            continue
        elif closed and ch != ",":
            return False
        elif ch == '"':
            quoted, closed = True, False
        elif ch == "<":
            if angle:
                return False
            angle, closed = True, False
        elif ch == ">":
            if not angle:
                return False
            angle, closed = False, True
        else:
            closed = False
    return not (quoted or depth or angle)
