"""One mail made of a burst of chat messages from a plain Tox client. Pure, no I/O.

The mail is from the friend (the contact's name and address, else `name <KEY@tox>`), threaded
per friend: each burst's mail answers the one before it (In-Reply-To, References with the first
and the last), so a mail client shows a friend's chat as one conversation. `/me` action
messages stay actions (`* name waves`). The friend's words are untrusted: the name is made
printable and one line before it goes into a header; the text goes only into the body.
"""

from __future__ import annotations

import email.policy
import hashlib
import mimetypes
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

from ..contacts.peer_text import printable
from . import trust_headers

MAX_NAME = 64  # characters of a friend's Tox name shown in From and Subject
MAX_FILE_NAME = 120  # characters of a chat app's file name kept for its attachment


@dataclass(frozen=True)
class ChatLine:
    at: float  # unix time
    action: bool  # a /me message
    text: str


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes


@dataclass(frozen=True)
class Burst:
    """What one mail carries: who sent it, the lines, and what was not kept."""

    friend_key: bytes
    name: str  # who the friend is to the reader: the contact's name, else their Tox name
    address: str  # the contact's address, else KEY@tox
    lines: tuple[ChatLine, ...]
    first_id: int  # the stored messages' ids: together with the key they name the burst
    last_id: int
    dropped: int = 0  # messages past the burst's caps, counted and not kept
    attachments: tuple[Attachment, ...] = ()

    @property
    def burst_id(self) -> bytes:
        """The same messages make the same id: a second delivery after a kill is one Dovecot's
        dedup Sieve drops (X-Toxbridge-Id); a burst that grew meanwhile gets a new id."""
        return hashlib.sha256(b"chat\0%s\0%d\0%d" % (self.friend_key, self.first_id, self.last_id)).digest()


def shown_name(name: str, friend_key: bytes) -> str:
    """A friend's self-chosen Tox name made fit for a header, or their key's start if empty."""
    clean = printable(" ".join(name.split()), MAX_NAME).replace('"', "'")
    return clean or friend_key.hex()[:8].upper()


def attachment_name(filename: bytes) -> str:
    """A chat app's file name made safe for a MIME filename and a mail client's save dialog:
    its last path part only (no `../`), printable, one line, not hidden, never empty."""
    text = filename.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(c if c.isprintable() else "_" for c in " ".join(text.split())).lstrip(".").strip()
    if len(clean) > MAX_FILE_NAME:  # keep the extension: it says what the file is
        stem, dot, ext = clean.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        clean = clean[: MAX_FILE_NAME - len(keep) - 1].rstrip() + ("." + keep if keep else "")
    return clean or "file"


def content_type(name: str) -> tuple[str, str]:
    """(maintype, subtype) guessed from the file name, else application/octet-stream."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if guessed is None or encoding is not None or "/" not in guessed:  # .tar.gz: the bytes are gzip
        return "application", "octet-stream"
    maintype, subtype = guessed.split("/", 1)
    return maintype, subtype


def message_id(burst: Burst, hostname: str) -> str:
    return f"<chat.{burst.burst_id.hex()[:32]}@{hostname}>"


def compose(burst: Burst, hostname: str, to_address: str, thread: tuple[str, str] | None) -> bytes:
    """The mail, trust headers on top, CRLF line ends; `thread`: (first, last) Message-ID of the
    friend's earlier chat mails."""
    name = shown_name(burst.name, burst.friend_key)
    mail = EmailMessage(policy=email.policy.SMTP)
    local, _, domain = burst.address.rpartition("@")
    mail["From"] = Address(display_name=name, username=local, domain=domain)
    mail["To"] = to_address
    mail["Subject"] = f"Chat with {name}"
    mail["Date"] = formatdate(burst.lines[0].at if burst.lines else time.time(), localtime=True)
    mail["Message-ID"] = message_id(burst, hostname)
    if thread is not None:
        root, last = thread
        mail["In-Reply-To"] = last
        mail["References"] = root if root == last else f"{root} {last}"
    mail["X-Toxbridge-Chat"] = "messages from a Tox chat app"
    mail.set_content(body(burst, name), charset="utf-8")
    for attachment in burst.attachments:
        maintype, subtype = content_type(attachment.name)
        # bytes: base64 (also text/*), so the file arrives exactly as the chat app sent it
        mail.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.name)
    peer_key = burst.friend_key.hex()
    stamp = trust_headers.stamp(
        hostname,
        to_address,
        peer_key,
        burst.burst_id,
        f"{peer_key}@tox",
        "pass",
        "chat messages sent by this Tox key itself",
    )
    return stamp + mail.as_bytes()


def body(burst: Burst, name: str) -> str:
    out = []
    for line in burst.lines:
        when = time.strftime("%H:%M", time.localtime(line.at))
        out.append(f"[{when}] * {name} {line.text}" if line.action else f"[{when}] {line.text}")
    if burst.dropped:
        out.append(
            f"\n({burst.dropped} more messages in this conversation were not kept:"
            " more than one mail holds came at once)"
        )
    return "\n".join(out) + "\n"
