"""Issue 15: what a friend's mail may claim. Point 1: the header's sender must be one From field
that reads the same everywhere. Point 4: trust on first use never hands a friend an address of
the household's own domains, nor one the household already mails by the ordinary route; other
first claims are shown (contacts list, status) and can be refused (contacts remove)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import cast

import pytest

from toxbridge.config import Config, User
from toxbridge.contacts.book import ContactBook
from toxbridge.contacts.roster import ORDINARY_CAP
from toxbridge.contacts.routes import Routes
from toxbridge.mail.headers import scan, sender_defect
from toxbridge.ops.status import WARN, claims_check
from toxbridge.tox import wire
from toxbridge.tox.friends import Friends
from toxbridge.tox.node import ToxNode

FRIEND = b"\x05" * 32
USERS = ("bob@bob.test", "ghost@bob.test")


@pytest.fixture
def routes(roster) -> Routes:
    return Routes(ContactBook(), roster, USERS, mailboxes=("bob", "ghost"))


def bob(routes: Routes) -> Friends:
    config = cast(Config, SimpleNamespace(learn_senders=True))
    return Friends(config, User("bob", "bob@bob.test"), cast(ToxNode, None), routes, lambda: None)


def vet(routes: Routes, head: bytes, sender: str = "alice@alice.test"):
    return bob(routes).vet(FRIEND, wire.Envelope(sender, ("bob@bob.test",), len(head)), scan(head))


# ---------------------------------------------------------------- point 1: one From, no defects


@pytest.mark.parametrize(
    "head, reason",
    [
        (b"Subject: x\r\n\r\n", "no From field"),
        (b"From: alice@alice.test\r\nFrom: support@bank.example\r\n\r\n", "2 From fields"),
        (
            b"From: alice@alice.test\r\nfrom\x00x: support@bank.example\r\n\r\n",
            "NUL byte in a header field name",
        ),
        (b"X A: b\r\nFrom: alice@alice.test\r\n\r\n", "malformed header field before From"),
        (b"X\xe9: b\r\nFrom: alice@alice.test\r\n\r\n", "malformed header field before From"),
        (b"no colon\r\nFrom: alice@alice.test\r\n\r\n", "malformed header field before From"),
        (b"From : alice@alice.test\r\n\r\n", "space between From and its colon"),
        (b"From: not an address\r\n\r\n", "does not read as mail addresses"),
        (b"From: <alice@alice.test>support@bank.example\r\n\r\n", "does not read as mail addresses"),
        (b"From: <alice@alice.test\r\n\r\n", "does not read as mail addresses"),
        (b"From:\r\n\r\n", "does not read as mail addresses"),
        (b"From: alice\x00@alice.test\r\n\r\n", "NUL byte in the From field"),
    ],
)
def test_a_header_whose_sender_cannot_be_judged_fails_and_nothing_is_learned(routes, roster, head, reason):
    assert reason in sender_defect(scan(head))
    verdict = vet(routes, head)
    assert not verdict.ok and reason in verdict.reason
    assert roster.learned() == []


@pytest.mark.parametrize(
    "head",
    [
        b"From: alice@alice.test\r\n\r\n",
        b"From: Alice <alice@alice.test> (home)\r\nX A: after From is no matter\r\n\r\n",
        b'From: "Alice, A." <alice@alice.test>\r\n\r\n',
        b"From:\r\n alice@alice.test\r\n\r\n",
        b"Subject: x\r\nFrom: =?utf-8?q?Al=C3=AFce?= <alice@alice.test>\r\n\r\n",
    ],
)
def test_one_well_formed_from_is_judged(routes, head):
    assert sender_defect(scan(head)) == ""
    assert vet(routes, head).ok


# ---------------------------------------------------------------- point 4: claims


def test_a_friend_cannot_claim_an_address_of_the_households_own_domains(routes, roster):
    verdict = vet(routes, b"From: Helpdesk <helpdesk@bob.test>\r\n\r\n", "helpdesk@Bob.Test")
    assert not verdict.ok and "own domains" in verdict.reason
    assert roster.learned() == [] and not routes.learn("bob", "helpdesk@bob.test", FRIEND)


def test_a_friend_cannot_claim_an_address_the_household_mails_by_the_ordinary_route(routes, roster):
    assert routes.postfix_asks("Support@Bank.Example") is False  # Postfix routes it the ordinary way
    verdict = vet(routes, b"From: Bank <support@bank.example>\r\n\r\n", "support@bank.example")
    assert not verdict.ok and "ordinary route" in verdict.reason
    assert roster.learned() == [] and not routes.learn("bob", "support+x@bank.example", FRIEND)
    assert routes.postfix_asks("support@bank.example") is False  # and it stays ordinary


def test_what_postfix_asks_that_is_ours_or_tox_is_not_recorded(routes, roster):
    for key in ("*", "bank.example", "bob@bob.test", "x@bob.test", f"{FRIEND.hex()}@tox"):
        routes.postfix_asks(key)
    assert roster.ordinary_count() == 0


def test_an_address_routed_over_tox_is_not_recorded_as_ordinary(routes, roster):
    routes.learn("bob", "alice@alice.test", FRIEND)
    routes.learn("ghost", "alice@alice.test", FRIEND)
    assert routes.postfix_asks("alice@alice.test") is True and roster.ordinary_count() == 0


def test_the_ordinary_record_is_bounded_and_keeps_the_latest(roster):
    for i in range(ORDINARY_CAP + 10):
        roster.note_ordinary(f"a{i}@x.example")
    assert roster.ordinary_count() == ORDINARY_CAP
    assert roster.is_ordinary(f"a{ORDINARY_CAP + 9}@x.example") and not roster.is_ordinary("a0@x.example")


def test_any_other_first_claim_is_learned_shown_in_status_and_refused_by_forgetting(routes, roster):
    assert vet(routes, b"From: pal@elsewhere.example\r\n\r\n", "pal@elsewhere.example").ok
    [entry] = roster.learned()
    check = claims_check(roster.learned(), time.time())
    assert check.level == WARN and "pal@elsewhere.example" in check.text and FRIEND.hex()[:8] in check.text
    assert "contacts remove" in check.action
    assert claims_check(roster.learned(), entry.at + 8 * 86400).level != WARN  # old ones are settled
    assert roster.forget("pal@elsewhere.example") == 1 and roster.learned() == []
