"""The receiver's delivery record and the Postfix queue selection: pure logic and SQLite on disk."""

import os
import time

from toxbridge.contacts.book import Contact, ContactBook
from toxbridge.contacts.roster import Roster
from toxbridge.contacts.routes import Routes
from toxbridge.mail.postqueue import deferred_for, parse_queue
from toxbridge.mail.smtpreply import Reply
from toxbridge.tox.delivered import DeliveryStore
from toxbridge.tox.partial import Partials

KEY = bytes(range(32))
OTHER = bytes(32)


def test_final_outcomes_are_remembered_across_reopen(tmp_path):
    path = tmp_path / "d.sqlite"
    store = DeliveryStore(path, keep_seconds=3600)
    store.record(b"\1" * 32, "bob", Reply(250, "2.0.0 Saved"))
    store.record(b"\2" * 32, "bob", Reply(550, "5.1.1 no such user"))
    store.record(b"\3" * 32, "bob", Reply(451, "4.4.2 later"))
    store.close()
    store = DeliveryStore(path, keep_seconds=3600)
    assert store.lookup(b"\1" * 32, "bob") == Reply(250, "2.0.0 Saved")
    refused = store.lookup(b"\2" * 32, "bob")
    assert refused is not None and refused.code == 550
    assert store.lookup(b"\3" * 32, "bob") is None  # temporary: try again
    assert store.lookup(b"\1" * 32, "carol") is None  # per mailbox


def test_prune_forgets_old_records(tmp_path):
    store = DeliveryStore(tmp_path / "d.sqlite", keep_seconds=10)
    store.record(b"\1" * 32, "bob", Reply(250, "ok"))
    assert store.prune(now=time.time()) == 0
    assert store.prune(now=time.time() + 11) == 1
    assert store.lookup(b"\1" * 32, "bob") is None


def queue_entry(qid, sender, rcpts, queue="deferred"):
    return {
        "queue_name": queue,
        "queue_id": qid,
        "sender": sender,
        "recipients": [{"address": r, "delay_reason": "451 4.4.1"} for r in rcpts],
    }


def test_deferred_for_picks_this_friends_mail_from_this_sender():
    full = KEY + b"\0\0\0\0"
    from toxbridge.address import tox_checksum

    tox_id = (full + tox_checksum(full)).hex()
    entries = [
        queue_entry("A1", "alice@a.test", [f"{tox_id.upper()}@tox"]),
        queue_entry("A2", "ALICE@a.test", ["nothex@tox", f"{KEY.hex()}@TOX"]),
        queue_entry("A3", "alan@a.test", [f"{KEY.hex()}@tox"]),  # other sender
        queue_entry("A4", "alice@a.test", [f"{OTHER.hex()}@tox"]),  # other friend
        queue_entry("A5", "alice@a.test", [f"{KEY.hex()}@tox"], "active"),  # already on its way
        queue_entry("A6", "alice@a.test", ["friend@example.org"]),  # the friend's contact address
        queue_entry("A7", "alice@a.test", ["stranger@example.org"]),
    ]
    book = ContactBook((Contact("Friend", ("friend@example.org",), KEY),))
    matches = Routes(book, Roster(":memory:")).recipient_matcher("alice", KEY)
    assert deferred_for(entries, "alice@a.test", matches) == ["A1", "A2", "A6"]


def test_parse_queue_skips_junk_lines():
    out = '{"queue_id": "X", "queue_name": "deferred"}\nnot json\n[]\n'
    assert [e["queue_id"] for e in parse_queue(out)] == ["X"]


def test_prune_partials(tmp_path):
    (tmp_path / "bob").mkdir()
    old, new = tmp_path / "bob" / "old", tmp_path / "bob" / "new"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    partials = Partials(tmp_path, 1 << 30, 1 << 30, 0)
    partials.scan()  # what an earlier run left
    assert partials.prune(3600) == 1
    assert not old.exists() and new.exists()
