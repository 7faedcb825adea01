"""Bounces and auto-replies over Tox (issue 15.14): a mail with the null sender `<>` from a
friend's household reaches our user, marked with the friend's key, and its From: is vetted as
any mail's, so `<>` never lets a friend show another person's From as verified."""

from __future__ import annotations

import email
import email.policy
import subprocess
import uuid

import pytest
from test_e2e import ARRIVAL, message_id, split, wait_for, with_id

pytestmark = pytest.mark.integration


def _mail(from_: str, subject: str, body: str) -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4()}@bounces.test>"
    head = f"From: {from_}\r\nTo: someone\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
    return mid, (head + "\r\n" + body).encode()


def _results(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    return " ".join(str(parsed["Authentication-Results"]).split())


def test_a_postfix_bounce_from_a_friends_household_reaches_our_user_with_its_key(network):
    """bob's own Postfix bounces a mail whose envelope sender is alice's Tox address (submitted
    with sendmail(1), past smtpd's checks; the lab delivers nowhere beyond the machine): its DSN, MAIL FROM:<> and From: MAILER-DAEMON@bob.test,
    goes back over Tox from bob's household and lands in alice's INBOX marked with bob's key."""
    alice, bob = network["alice"], network["bob"]
    mid, msg = _mail("alice@alice.test", "bounce me", "To an address that does not exist.\r\n")
    subprocess.run(
        [
            "sendmail",
            "-C",
            str(bob.postfix.config_dir),
            "-f",
            alice.tox_address("alice"),
            "nobody@elsewhere.test",
        ],
        input=msg,
        check=True,
        capture_output=True,
        timeout=30,
    )
    (dsn,) = wait_for(
        alice, "alice", lambda m: mid.encode() in m and message_id(m) != mid and b"Undelivered" in m
    )
    head, _ = split(dsn)
    assert b"MAILER-DAEMON@bob.test" in head
    results = _results(dsn)
    bob_key = bob.tox_ids["bob"][:64].lower()  # bob is the first of bob's users that is alice's friend
    assert "; x-tox=pass " in results, results
    assert f"smtp.mailfrom=<> x-tox.key={bob_key}" in results, results
    bob.postfix.wait_queue_empty(ARRIVAL)


def test_a_vacation_reply_from_a_friend_reaches_our_user(network):
    """An auto-reply is sent with MAIL FROM:<> and the friend's own From:."""
    alice, bob = network["alice"], network["bob"]
    mid, msg = _mail("bob@bob.test", "Auto: away", "I am away until Monday.\r\n")
    bob.postfix.send("", [alice.tox_address("alice")], msg)
    (got,) = wait_for(alice, "alice", lambda m: message_id(m) == mid)
    results = _results(got)
    assert "; x-tox=pass " in results, results
    assert f"smtp.mailfrom=<> x-tox.key={bob.tox_ids['bob'][:64].lower()}" in results, results


def test_a_null_sender_mail_with_another_contacts_from_is_refused(network):
    """carol@carol.test is carol's (alice learned it from carol's mail); bob sending `<>` with
    that From: is a forgery: alice's bridge refuses it, nothing reaches alice with it."""
    alice, bob, carol = network["alice"], network["bob"], network["carol"]
    hello, msg = _mail("carol@carol.test", "hello from carol", "Binds carol@carol.test to carol.\r\n")
    carol.postfix.send(carol.address("carol"), [alice.tox_address("alice")], msg)
    wait_for(alice, "alice", lambda m: message_id(m) == hello)
    mark = alice.log_mark()
    forged, msg = _mail("carol@carol.test", "Undelivered Mail Returned to Sender", "Not carol's.\r\n")
    bob.postfix.send("", [alice.tox_address("alice")], msg)
    alice.wait_log(
        "friend " + bob.tox_ids["bob"][:8].lower() + " sent a mail with a sender it may not use: "
        "carol@carol.test belongs to another Tox",
        ARRIVAL,
        since=mark,
    )
    bob.postfix.wait_queue_empty(ARRIVAL)  # refused for good: a bounce of a bounce is not sent
    assert not with_id(alice.dovecot.fetch_inbox("alice"), forged)
