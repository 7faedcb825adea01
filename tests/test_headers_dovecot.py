"""The header scanner against the real Dovecot: for awkward headers delivered over LMTP, the From
that IMAP shows (ENVELOPE) is the one mail/headers.py reads."""

from __future__ import annotations

import asyncio
import imaplib
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from toxbridge.config import Endpoint
from toxbridge.lab.dovecot import Dovecot
from toxbridge.lab.ports import free_port
from toxbridge.mail import lmtp_out
from toxbridge.mail.headers import from_addresses, scan, sender_defect

pytestmark = pytest.mark.integration

CORPUS = [
    b"From: plain@home.example\r\n",
    b"From : space-before-colon@home.example\r\n",  # issue 15, point 1
    b"From \t: tabs@home.example\r\n",
    b"no colon on this line\r\nFrom: after-a-line-without-colon@home.example\r\n",
    b"From\x00junk: nul-in-name@home.example\r\n",
    b"From: first@home.example\r\nFrom: second@home.example\r\n",
    b"From:\r\n  folded@home.example\r\n",
    b"X-A: a\rFrom: lone-cr@home.example\r\n",  # one field: X-A
    b" From: leading-space@home.example\r\n",
    b"Foo\r\n From: continuation@home.example\r\n",
    b"X-A: a\n\r\nFrom: after-mixed-empty-line@home.example\r\n",  # body
    b"X-A: a\r\n\r\r\nFrom: after-cr-cr-lf@home.example\r\n",  # body: the LMTP drops a CR
    b"X-A: a\r\n\r\r\r\nFrom: after-cr-cr-cr-lf@home.example\r\n",  # header
    b"X-A: a\r\n\r \r\nFrom: after-cr-space@home.example\r\n",
    b"X-A: a\r\r\nFrom: value-ends-in-cr@home.example\r\n",
]
# Issue 15 point 1: headers whose From Python's email and Dovecot may read apart. The sender
# check refuses them (sender_defect) or judges the From IMAP shows.
SENDER_CORPUS = [
    b"Subject: no from at all\r\n",
    b"X\xe9: 8-bit name\r\nFrom: after-8-bit-name@home.example\r\n",
    b"X A: space in name\r\nFrom: after-space-in-name@home.example\r\n",
    b"From: Bank <support@bank.example> (the bank)\r\n",
    b'From: "x@home.example" <quoted-name@home.example>\r\n',
    b"From: one@home.example, two@home.example\r\n",
    b"From: one@home.example two@home.example\r\n",
    b"From: <one@home.example>two@home.example\r\n",
    b"From: undisclosed:;\r\n",
    b"From: group: in-group@home.example;\r\n",
    b"From: Doe, John <comma-name@home.example>\r\n",
    b"From: not an address\r\n",
    b"From: <unclosed@home.example\r\n",
    b'From: "unterminated <quote@home.example>\r\n',
    b"From: =?utf-8?q?B=C3=A4nk?= <encoded-name@home.example>\r\n",
    b"From: a@home.example (comment@home.example)\r\n",
    b"From: nul\x00@home.example\r\n",
    b"From:\r\n",
    b"From: \xc3\xa4@home.example\r\n",
]


@pytest.fixture(scope="module")
def dovecot():
    root = Path(tempfile.mkdtemp(prefix="toxbridge-headers-", dir="/tmp"))
    root.chmod(0o755)  # the lab's users must reach it
    server = Dovecot(
        root,
        "headers",
        {"mom": "mom-pw", "dad": "dad-pw"},
        lmtp_port=free_port(),
        imap_port=free_port(),
        pop3_port=free_port(),
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


_TOKEN = re.compile(rb'\(|\)|NIL|"(?:[^"\\]|\\.)*"')


def envelope_from(response: bytes) -> list[str]:
    """The From addresses of an IMAP ENVELOPE (the third item), as mailbox@host, lower case."""
    stack: list[list] = [[]]
    for token in _TOKEN.findall(response[response.index(b"ENVELOPE") + len(b"ENVELOPE") :]):
        if token == b"(":
            stack.append([])
        elif token == b")":
            done = stack.pop()
            stack[-1].append(done)
            if len(stack) == 1:
                break
        else:
            stack[-1].append(None if token == b"NIL" else token[1:-1].decode())
    addresses = stack[0][0][2] or []
    return [f"{mailbox}@{host}".lower() for _, _, mailbox, host in addresses if host is not None]


def _delivered(dovecot, headers: list[bytes], user: str) -> list[list[str]]:
    """Deliver a mail per header to `user`; the From addresses IMAP's ENVELOPE shows, in order."""
    messages = [header + f"Subject: case {i}\r\n\r\nbody\r\n".encode() for i, header in enumerate(headers)]
    for message in messages:
        replies = asyncio.run(
            lmtp_out.deliver(Endpoint("127.0.0.1", dovecot.lmtp_port), "s@x.example", [user], message, "test")
        )
        assert replies[0].code == 250, replies
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, f"{user}-pw")
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch("1:*", "(ENVELOPE)")
    finally:
        imap.logout()
    shown = [envelope_from(item) for item in _untagged(data)]
    assert len(shown) == len(messages)
    return shown


def _untagged(data: list) -> list[bytes]:
    """imaplib's FETCH answer as one line per message, literals ({n} and their bytes) quoted."""
    lines: list[bytes] = []
    for item in data:
        if isinstance(item, tuple):
            head, literal = item
            quoted = literal.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            text = re.sub(rb"\{\d+\}$", b"", head) + b'"' + quoted + b'"'
            if b"ENVELOPE" in head:
                lines.append(text)
            else:
                lines[-1] += text
        elif item is not None and b"ENVELOPE" in item and not item.startswith(b" "):
            lines.append(item)
        elif item is not None and lines:
            lines[-1] += item
    return lines


def test_the_from_imap_shows_is_the_from_the_scanner_reads(dovecot):
    shown = _delivered(dovecot, CORPUS, "mom")
    read = [from_addresses(scan(header + b"\r\n")) for header in CORPUS]
    assert read == shown
    assert shown[1] == ["space-before-colon@home.example"] and shown[3] == [
        "after-a-line-without-colon@home.example"
    ]


def test_every_mail_the_sender_check_judges_shows_in_imap_the_from_it_judged(dovecot):
    """A mail is refused (sender_defect) or the From it is judged by is the one IMAP shows."""
    every = CORPUS + SENDER_CORPUS
    shown = dict(zip(every, _delivered(dovecot, every, "dad"), strict=True))
    heads = {h: scan(h + b"\r\n") for h in every}
    judged = {h: from_addresses(head) for h, head in heads.items() if not sender_defect(head)}
    assert {h: shown[h] for h in judged} == judged
    assert len(judged) >= 8 and b"From: plain@home.example\r\n" in judged
