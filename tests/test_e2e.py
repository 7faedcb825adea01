"""Mail across Tox with real Postfix, Dovecot, tox-bootstrapd and toxbridge processes."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import os
import uuid

import pytest

from toxbridge.config import Endpoint
from toxbridge.lab.ports import wait_until
from toxbridge.mail import lmtp_out

pytestmark = pytest.mark.integration

ARRIVAL = 60.0  # generous bound for CI; a mail takes well under a second once friends are up


def split(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    return head, body


def message_id(raw: bytes) -> str:
    return email.message_from_bytes(raw, policy=email.policy.compat32)["Message-ID"]


def with_id(box: list[bytes], mid: str) -> list[bytes]:
    return [m for m in box if message_id(m) == mid]


def wait_for(home, user: str, predicate, timeout: float = ARRIVAL) -> list[bytes]:
    found: list[bytes] = []

    def check() -> bool:
        nonlocal found
        found = [m for m in home.dovecot.fetch_inbox(user) if predicate(m)]
        return bool(found)

    assert wait_until(check, timeout, interval=0.2), (
        f"nothing matching in {home.name}/{user} after {timeout}s"
    )
    return found


def compose(subject: str, body: bytes, extra_headers: str = "") -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4()}@alice.test>"
    head = f"From: alice@alice.test\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n{extra_headers}"
    return mid, head.encode() + b"\r\n" + body


def test_friend_request_mail_arrives_after_acceptance(network):
    """The mail that triggered the friend request was deferred, not lost."""
    alice, bob = network["alice"], network["bob"]
    alice.postfix.flush()
    found = wait_for(bob, "bob", lambda m: b"Subject: friend request" in m)
    assert len(found) == 1


def test_mail_crosses_tox_byte_identical(network):
    alice, bob = network["alice"], network["bob"]
    attachment = os.urandom(3000)

    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    body = (
        b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße aus Köln — ça va? 日本語\r\n".encode()
        + b"--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"--XYZ--\r\n"
    )
    mid, msg = compose(
        "bytes", body, 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XYZ"\r\n'
    )
    alice.postfix.send(alice.address("alice"), [bob.tox_address("bob")], msg)
    (got,) = wait_for(bob, "bob", lambda m: message_id(m) == mid)
    head, got_body = split(got)
    assert got_body == split(msg)[1]
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    attachment_part = list(parsed.iter_attachments())[0]
    assert attachment_part.get_content() == attachment
    alice_key = alice.tox_ids["alice"][:64].lower()
    assert f"x-tox.key={alice_key}".encode() in head
    assert b"Received: from tox (Tox key " + alice_key.encode() in head


def test_per_recipient_outcomes_across_households(network):
    """bob (ok) and ghost (no Dovecot mailbox: 5.1.1) behind one bridge, carol behind another,
    alan in alice's own household: each good recipient gets the mail once, ghost bounces alone."""
    alice, bob, carol = network["alice"], network["bob"], network["carol"]
    mid, msg = compose("four recipients", b"One mail, four recipients.\r\n")
    rcpts = [
        bob.tox_address("bob"),
        bob.tox_address("ghost"),
        carol.tox_address("carol"),
        alice.address("alan"),
    ]
    alice.postfix.send(alice.address("alice"), rcpts, msg)
    wait_for(bob, "bob", lambda m: message_id(m) == mid)
    wait_for(carol, "carol", lambda m: message_id(m) == mid)
    wait_for(alice, "alan", lambda m: message_id(m) == mid)
    bounce = wait_for(alice, "alice", lambda m: b"four recipients" in m and b"Undelivered" in m)
    report = bounce[0].decode("utf-8", "replace")
    assert (
        bob.tox_ids["ghost"][:64].lower() in report.lower() or bob.tox_ids["ghost"].lower() in report.lower()
    )
    assert "5.1.1" in report
    assert bob.tox_ids["bob"].lower() not in report.lower().split("message/rfc822")[0]
    alice.postfix.wait_queue_empty(ARRIVAL)
    for home, user in ((bob, "bob"), (carol, "carol"), (alice, "alan")):
        assert len(with_id(home.dovecot.fetch_inbox(user), mid)) == 1, f"{user} got it more than once"


def test_bad_tox_address_bounces_with_5_1_3(network):
    alice = network["alice"]
    _, msg = compose("bad address", b"To nowhere.\r\n")
    bad = "0123456789abcdef@tox"
    alice.postfix.send(alice.address("alice"), [bad], msg)
    (bounce,) = wait_for(alice, "alice", lambda m: b"bad address" in m and b"Undelivered" in m)
    assert b"5.1.3" in bounce and bad.encode() in bounce


def test_recipient_behind_stopped_bridge_stays_queued_then_arrives(network):
    alice, carol = network["alice"], network["carol"]
    mark = alice.log_mark()
    carol.stop_bridge()
    alice.wait_log("friend " + carol.tox_ids["carol"][:8].lower() + " went offline", 90, since=mark)
    mid, msg = compose("while carol is away", b"Kept in Postfix's queue.\r\n")
    alice.postfix.send(alice.address("alice"), [carol.tox_address("carol")], msg)

    def deferred() -> list[dict]:
        return [
            q
            for q in alice.postfix.queue()
            if any("4.4.1" in r.get("delay_reason", "") for r in q.get("recipients", []))
        ]

    assert wait_until(lambda: bool(deferred()), ARRIVAL), alice.postfix.queue()
    assert not [m for m in alice.dovecot.fetch_inbox("alice") if b"while carol is away" in m], "bounced"
    mark = alice.log_mark()
    carol.start_bridge()
    alice.wait_log("alice: friend " + carol.tox_ids["carol"][:8].lower() + " is a bridge", 90, since=mark)
    alice.postfix.flush()
    wait_for(carol, "carol", lambda m: message_id(m) == mid)
    alice.postfix.wait_queue_empty(ARRIVAL)


def test_lmtp_client_reads_one_reply_per_recipient_from_dovecot(network):
    alice = network["alice"]
    mid, msg = compose("direct lmtp", b"Straight into Dovecot.\r\n")
    replies = asyncio.run(
        lmtp_out.deliver(
            Endpoint("127.0.0.1", alice.dovecot.lmtp_port),
            "alice@alice.test",
            ["alice", "nosuchuser", "alan"],
            msg,
            "test",
        )
    )
    assert [r.code // 100 for r in replies] == [2, 5, 2]
    assert len(with_id(alice.dovecot.fetch_inbox("alice"), mid)) == 1
    assert len(with_id(alice.dovecot.fetch_inbox("alan"), mid)) == 1


def test_sender_without_a_tox_identity_bounces_with_5_7_1(network):
    """alan has a mailbox but no Tox identity: the bridge refuses to send as him."""
    alice, bob = network["alice"], network["bob"]
    _, msg = compose("not my identity", b"alan has no Tox identity.\r\n")
    alice.postfix.send(alice.address("alan"), [bob.tox_address("bob")], msg)
    (bounce,) = wait_for(alice, "alan", lambda m: b"not my identity" in m and b"Undelivered" in m)
    assert b"5.7.1" in bounce


def test_large_mail_arrives_intact(network):
    alice, bob = network["alice"], network["bob"]
    attachment = os.urandom(8 * 1024 * 1024)
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    body = (
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"--B--\r\n"
    )
    mid, msg = compose("large", body, 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n')
    alice.postfix.send(alice.address("alice"), [bob.tox_address("bob")], msg)
    (got,) = wait_for(bob, "bob", lambda m: message_id(m) == mid, timeout=120)
    assert split(got)[1] == split(msg)[1]


def test_dovecot_down_defers_then_delivers(network):
    """A 4xx from the receiving side (its Dovecot is not answering) keeps the mail queued."""
    alice, carol = network["alice"], network["carol"]
    carol.dovecot.stop()
    try:
        mid, msg = compose("dovecot away", b"Waits for Dovecot.\r\n")
        alice.postfix.send(alice.address("alice"), [carol.tox_address("carol")], msg)

        def deferred() -> bool:
            return any(
                "4.4.2" in r.get("delay_reason", "")
                for q in alice.postfix.queue()
                for r in q.get("recipients", [])
            )

        assert wait_until(deferred, ARRIVAL), alice.postfix.queue()
    finally:
        carol.dovecot.start()
    alice.postfix.flush()
    wait_for(carol, "carol", lambda m: message_id(m) == mid)


def test_dovecot_drops_a_second_copy_of_a_tox_mail(network):
    """The last line of defence against a bridge that died between Dovecot's 250 and its own
    record: deploy/dovecot's Sieve script keeps one copy per X-Toxbridge-Id."""
    alice = network["alice"]
    endpoint = Endpoint("127.0.0.1", alice.dovecot.lmtp_port)
    tox_id = os.urandom(32).hex()
    mid, msg = compose("twice", b"Sent twice, stored once.\r\n")
    for _ in range(2):
        replies = asyncio.run(
            lmtp_out.deliver(endpoint, "x@tox", ["alan"], f"X-Toxbridge-Id: {tox_id}\r\n".encode() + msg, "t")
        )
        assert replies[0].code == 250, replies
    assert len(with_id(alice.dovecot.fetch_inbox("alan"), mid)) == 1
    mid2, plain = compose("plain twice", b"No id: both copies stay.\r\n")
    for _ in range(2):
        asyncio.run(lmtp_out.deliver(endpoint, "x@example.org", ["alan"], plain, "t"))
    assert len(with_id(alice.dovecot.fetch_inbox("alan"), mid2)) == 2


def test_dovecot_logged_no_errors(network):
    """After the mails above: Dovecot never failed (the dedup records of a mailbox's first mail
    once failed to lock in a home that did not exist yet)."""
    for home in network.values():
        log = home.dovecot.log_path.read_text()
        assert [line for line in log.splitlines() if "Error:" in line] == []
