"""A mail turned into chat messages for a friend on a plain Tox chat app. Pure, no I/O.

The chat user sees who wrote and the subject, then the text body: the text/plain part, else the
HTML part made text with the standard library's HTML parser; the quoted reply under it (lines
that start with ">" and the "On ... wrote:" line above them) is trimmed, since the chat already
holds what it quotes. The text is split into messages of at most toxcore's limit in bytes, at a
line break where one fits, else at a space, else (one long word) at a character boundary.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart
from html.parser import HTMLParser

_ATTRIBUTION = re.compile(r"^(On .{0,200}wrote:|Am .{0,200}schrieb .{0,80}:|Le .{0,200}a écrit :)\s*$")
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table"}


@dataclass(frozen=True)
class ChatMail:
    messages: tuple[bytes, ...]
    attachments: tuple[tuple[str, bytes], ...]  # (file name, content)


def as_chat(message: bytes, limit: int) -> ChatMail:
    mail = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    sender = str(mail.get("From", "") or "").strip() or "someone"
    subject = " ".join(str(mail.get("Subject", "") or "").split())
    text = _text_body(mail)
    head = f"Mail from {sender}" + (f": {subject}" if subject else "")
    pieces = split(f"{head}\n\n{trim_quoted(text)}".strip(), limit)
    attachments = tuple(
        (part.get_filename() or "attachment", _payload(part))
        for part in mail.iter_attachments()
        if isinstance(part, EmailMessage)
    )
    return ChatMail(tuple(pieces), attachments)


def _text_body(mail: EmailMessage) -> str:
    part = mail.get_body(("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding: what decodes
        content = _payload(part).decode("utf-8", "replace")
    if not isinstance(content, str):
        return ""
    return html_to_text(content) if part.get_content_subtype() == "html" else content


def _payload(part: MIMEPart) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


class _TextOfHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0  # inside <script> or <style>

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOfHTML()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def trim_quoted(text: str) -> str:
    """Without quoted lines ("> …") and the attribution line that introduces them."""
    kept: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith(">"):
            while kept and (not kept[-1].strip() or _ATTRIBUTION.match(kept[-1].strip())):
                if _ATTRIBUTION.match(kept[-1].strip()):
                    kept.pop()
                    break
                kept.pop()
            continue
        kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def split(text: str, limit: int) -> list[bytes]:
    """Pieces of at most `limit` UTF-8 bytes, cut at a line break, else a space, else a character."""
    pieces: list[bytes] = []
    rest = text.strip()
    while rest:
        data = rest.encode()
        if len(data) <= limit:
            pieces.append(data)
            break
        head = data[:limit].decode("utf-8", "ignore")  # whole characters only
        cut = head.rfind("\n")
        if cut <= 0:
            cut = head.rfind(" ")
        if cut <= 0:
            cut = len(head)
        pieces.append(head[:cut].rstrip().encode())
        rest = rest[cut:].lstrip()
    return [p for p in pieces if p]
