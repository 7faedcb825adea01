"""The bridge's LMTP listener under garbage, and 8-bit, SMTPUTF8 and DSN mail through real Postfix.

A raw socket client talks to alice's real bridge: every bad line gets exactly one reply and the
session stays in step (NOOP answers 250 afterwards), a message over the limit gets one 552 per
recipient. Through Postfix, 8-bit and UTF-8 mail arrives byte for byte, and DSN requests work.
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import socket
import uuid
from pathlib import Path

import pytest

from toxbridge.config import load
from toxbridge.lab.ports import wait_until
from toxbridge.mail.smtpreply import Reply, ReplyReader

pytestmark = pytest.mark.integration

ARRIVAL = 60.0


class Raw:
    """A blocking LMTP client that sends exactly the bytes it is given."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.parser = ReplyReader()
        self.pending: list[Reply] = []
        assert self.reply().code == 220

    def reply(self):
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "the bridge closed the connection"
            self.pending += self.parser.feed(data)
        return self.pending.pop(0)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: bytes):
        self.send(line + b"\r\n")
        return self.reply()

    def in_step(self) -> bool:
        return self.cmd(b"NOOP").code == 250 and not self.pending

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def lmtp(network):
    client = Raw(network["alice"].postfix.bridge_lmtp_socket)
    assert client.cmd(b"LHLO postfix.alice.test").code == 250
    yield client
    client.close()


def split_body(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").partition(b"\n\n")[2]


def arrived(home, user: str, token: bytes) -> list[bytes]:
    found: list[bytes] = []

    def check() -> bool:
        nonlocal found
        found = [m for m in home.dovecot.fetch_inbox(user) if token in m]
        return bool(found)

    assert wait_until(check, ARRIVAL, interval=0.2), f"{token!r} did not reach {home.name}/{user}"
    return found


@pytest.mark.parametrize(
    "line",
    [
        b"FOO",
        b"HELO x",
        b"EHLO x",
        b"\xff\xfe\xfd",
        b"\x00\x01\x02",
        b"MAIL",
        b"RCPT TO:<x@tox>",
        b"DATA",
        b"MAIL FROM:alice",
        b"   ",
    ],
)
def test_garbage_command_gets_one_error_and_the_session_stays_in_step(lmtp, line):
    assert 500 <= lmtp.cmd(line).code < 600
    assert lmtp.in_step()


def test_many_unknown_commands_end_the_session_with_a_reply(lmtp):
    codes = [lmtp.cmd(b"XJUNK%d" % i).code for i in range(5)]
    assert codes == [500] * 4 + [502]
    assert lmtp.sock.recv(100) == b""  # closed after the reply, not mid-line


@pytest.mark.parametrize("line", [b"NOOP " + b"x" * 5000, b"RSET " + os.urandom(3000).replace(b"\n", b"")])
def test_over_long_command_line_and_binary_junk(lmtp, line):
    assert lmtp.cmd(line).code == 500
    assert lmtp.in_step()


def test_over_long_rcpt_is_refused_without_a_transaction(lmtp, network):
    assert lmtp.cmd(b"MAIL FROM:<alice@alice.test>").code == 250
    assert lmtp.cmd(b"RCPT TO:<" + b"a" * 700 + b"@tox>").code == 500
    assert lmtp.cmd(b"DATA").code == 503
    assert lmtp.in_step()


def test_size_announced_over_the_limit_is_refused_at_mail(lmtp, network):
    limit = load(network["alice"].config_path).max_message_size
    reply = lmtp.cmd(b"MAIL FROM:<alice@alice.test> SIZE=%d" % (limit + 1))
    assert (reply.code, reply.text[:5]) == (552, "5.3.4")
    assert lmtp.in_step()


def test_data_over_the_limit_gets_one_552_per_recipient(lmtp, network):
    bob, carol = network["bob"], network["carol"]
    limit = load(network["alice"].config_path).max_message_size
    assert lmtp.cmd(b"MAIL FROM:<alice@alice.test>").code == 250
    for rcpt in (bob.tox_address("bob"), carol.tox_address("carol")):
        assert lmtp.cmd(f"RCPT TO:<{rcpt}>".encode()).code == 250
    assert lmtp.cmd(b"DATA").code == 354
    line = b"y" * 996 + b"\r\n"
    block = line * 1024  # about 1 MB
    lmtp.send(b"Subject: too big\r\n\r\n")
    for _ in range(limit // len(block) + 2):
        lmtp.send(block)
    lmtp.send(b".\r\n")
    replies = [lmtp.reply(), lmtp.reply()]
    assert [(r.code, r.text[:5]) for r in replies] == [(552, "5.3.4")] * 2
    assert lmtp.in_step()


def test_pipelined_transaction_gets_its_replies_in_order(lmtp, network):
    bob = network["bob"]
    token = uuid.uuid4().hex.encode()
    lmtp.send(
        b"MAIL FROM:<alice@alice.test>\r\n"
        b"RCPT TO:<" + bob.tox_address("bob").encode() + b">\r\n"
        b"RCPT TO:<not-a-tox-address@tox>\r\n"
        b"RCPT TO:<bob@example.org> FOO=BAR\r\n"
        b"DATA\r\n"
        b"From: alice@alice.test\r\n"  # exactly one From: the receiving bridge judges it (issue 15.1)
        b"Subject: pipelined " + token + b"\r\n\r\n..leading dot\r\n.\r\n"
        b"NOOP\r\n"
    )
    codes = [lmtp.reply().code for _ in range(6)]
    assert codes == [250, 250, 550, 555, 354, 250], codes
    assert lmtp.reply().code == 250  # NOOP: one reply after DATA for the one accepted recipient
    (got,) = arrived(bob, "bob", token)
    assert split_body(got) == b".leading dot\n"


def test_eight_bit_body_arrives_byte_identical(network):
    alice, bob = network["alice"], network["bob"]
    token = uuid.uuid4().hex
    body = (
        b"Latin-1, not UTF-8: caf\xe9 \xff\xfe\r\n"
        + "UTF-8: Grüße, 日本語, emoji 📬\r\n".encode()
        + b".a line starting with a dot\r\n"
        + bytes(range(0x80, 0x100)).replace(b"\x85", b"")
        + b"\r\n"
    )
    msg = (
        f"From: alice@alice.test\r\nSubject: 8bit {token}\r\nMessage-ID: <{token}@alice.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body
    alice.postfix.send(alice.address("alice"), [bob.tox_address("bob")], msg)
    (got,) = arrived(bob, "bob", token.encode())
    assert split_body(got) == split_body(msg)


def test_smtputf8_mail_with_utf8_headers_arrives_byte_identical(network):
    alice, bob = network["alice"], network["bob"]
    token = uuid.uuid4().hex
    head = (
        f"From: Jörg Müller <alice@alice.test>\r\nTo: Bøb <{bob.tox_address('bob')}>\r\n"
        f"Subject: Grüße aus Köln — {token} 📬\r\nMessage-ID: <{token}@alice.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
    ).encode()
    msg = head + b"\r\n" + "Ça va? 日本語\r\n".encode()
    with smtplib.SMTP("127.0.0.1", alice.postfix.smtp_port, timeout=60) as s:
        assert not s.sendmail(
            alice.address("alice"), [bob.tox_address("bob")], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )
    (got,) = arrived(bob, "bob", token.encode())
    assert split_body(got) == split_body(msg)
    got_head = got.replace(b"\r\n", b"\n").partition(b"\n\n")[0]
    for line in head.replace(b"\r\n", b"\n").splitlines():
        assert line in got_head.splitlines(), line
    assert (
        email.message_from_bytes(got, policy=email.policy.default)["Subject"]
        == f"Grüße aus Köln — {token} 📬"
    )


def test_dsn_request_through_postfix_arrives_and_success_is_reported(network):
    """Postfix does not pass NOTIFY/ORCPT on (the bridge does not announce DSN), so it keeps
    the duty to report: the mail reaches bob and alice gets the success report ("delivered") on the bridge's 250."""
    alice, bob = network["alice"], network["bob"]
    token = uuid.uuid4().hex
    rcpt = bob.tox_address("bob")
    msg = f"From: alice@alice.test\r\nSubject: dsn {token}\r\n\r\nPlease confirm.\r\n".encode()
    with smtplib.SMTP("127.0.0.1", alice.postfix.smtp_port, timeout=60) as s:
        assert not s.sendmail(
            alice.address("alice"),
            [rcpt],
            msg,
            mail_options=["RET=HDRS", f"ENVID={token}"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{rcpt}"],
        )
    arrived(bob, "bob", token.encode())
    (report,) = arrived(alice, "alice", f"Original-Envelope-Id: {token}".encode())
    text = report.decode("utf-8", "replace")
    assert "Action: delivered" in text, text  # flags=X on the toxbridge service: final delivery
    assert f"rfc822;{rcpt}".lower() in text.lower()
