"""SMTP/LMTP replies and message framing: the reply, its parser, DATA dot-stuffing. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPLY_LINE = 2048
MAX_REPLY_LINES = 100
_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -])(.*)$", re.S)


@dataclass(frozen=True)
class Reply:
    code: int  # SMTP reply code, 200..599
    text: str  # enhanced status code and words, e.g. "2.0.0 Saved"

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ReplyError(ValueError):
    """The server's reply does not follow RFC 5321."""


class ReplyReader:
    """Cuts a byte stream into complete replies; `feed` returns those finished so far."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)
        if len(self._buffer) > MAX_REPLY_LINE:
            raise ReplyError("reply line too long")
        return replies

    def _line(self, line: bytes) -> Reply | None:
        match = _LINE.match(line)
        if not match:
            raise ReplyError(f"malformed reply line {line[:80]!r}")
        code = int(match.group(1))
        if self._code is not None and code != self._code:
            raise ReplyError("reply code changes inside a multi-line reply")
        self._code = code
        self._lines.append(match.group(3).decode("utf-8", "replace"))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ReplyError("too many lines in one reply")
        if match.group(2) == b"-":
            return None
        reply = Reply(code, " ".join(self._lines))
        self._lines, self._code = [], None
        return reply


class DotStuffer:
    """The DATA section of a message fed in pieces: CRLF line ends, leading dots doubled,
    final CRLF.CRLF. Only the unfinished last line is held between pieces."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        lines = (self._carry + data).split(b"\n")
        self._carry = lines.pop()
        return b"".join(self._line(line) for line in lines)

    def finish(self) -> bytes:
        tail = self._line(self._carry) if self._carry else b""
        self._carry = b""
        return tail + b".\r\n"

    def _line(self, line: bytes) -> bytes:
        if line.endswith(b"\r"):
            line = line[:-1]
        return (b"." + line if line.startswith(b".") else line) + b"\r\n"
