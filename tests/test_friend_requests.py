"""Friend requests from strangers (tox/friends.py, contacts/roster.py, contacts/peer_text.py):
anyone on Tox can send as many as they like, with any bytes in them. The pending rows are
capped and expire, the log lines are rate-limited, the text is shown escaped."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toxbridge.config import Config, User
from toxbridge.contacts import roster as roster_module
from toxbridge.contacts.book import ContactBook
from toxbridge.contacts.peer_text import MAX_CHARS, printable
from toxbridge.contacts.roster import FROM_BEFORE, PENDING_CAP, PENDING_DAYS, Roster
from toxbridge.contacts.routes import Routes
from toxbridge.tox import friends as friends_module
from toxbridge.tox.friends import REQUEST_LOG_BURST, REQUEST_LOG_WINDOW, Friends
from toxbridge.tox.node import ToxNode


def key(n: int) -> bytes:
    return n.to_bytes(32, "big")


class Clock:
    def __init__(self, at: float = 1_000_000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def clock(monkeypatch) -> Clock:
    now = Clock()
    monkeypatch.setattr(roster_module.time, "time", now)
    return now


# ---------------------------------------------------------------- the pending rows


def test_pending_requests_are_capped_the_least_recent_dropped(roster, clock):
    for n in range(PENDING_CAP + 50):
        clock.at += 1
        roster.add_pending("dad", key(n), f"spam {n}")
    clock.at += 1
    roster.add_pending("dad", key(3), "asking again")  # a renewed request counts as recent
    kept = roster.pending()
    assert len(kept) == PENDING_CAP
    assert {p.public_key for p in kept} == {key(3)} | {key(n) for n in range(51, PENDING_CAP + 50)}
    roster.add_pending("mom", key(1), "hello")  # the cap is per mailbox
    assert len(roster.pending()) == PENDING_CAP + 1


def test_pending_requests_expire(roster, clock):
    start = clock.at
    roster.add_pending("dad", key(1), "old")
    clock.at += 86400
    roster.add_pending("dad", key(2), "newer")
    clock.at = start + PENDING_DAYS * 86400 - 60
    assert [p.public_key for p in roster.pending()] == [key(1), key(2)]
    clock.at += 120
    assert [p.public_key for p in roster.pending()] == [key(2)]


def test_ending_a_friendship_forgets_what_was_learned_of_it(roster):
    roster.learn("dad", "pen@pal.example", key(1))
    roster.learn("mom", "pen@pal.example", key(1))
    roster.learn("dad", "other@pal.example", key(2))
    roster.add_accepted("dad", key(1), "hi")
    roster.add_pending("dad", key(1), "hi")
    roster.end_friendship("dad", key(1))
    assert [(e.mailbox, e.public_key) for e in roster.learned()] == [("dad", key(2)), ("mom", key(1))]
    assert roster.accepted() == [] and roster.pending() == []
    assert roster.friendships_to_end("dad") == [key(1)] and roster.friendships_to_end("mom") == []
    roster.friendship_ended("dad", key(1))
    assert roster.friendships_to_end("dad") == []


# ---------------------------------------------------------------- the requests as they arrive


class Node:
    """What Friends.on_request uses of a ToxNode."""

    def __init__(self) -> None:
        self.friends: list[bytes] = []

    def friend_add_norequest(self, public_key: bytes) -> int:
        self.friends.append(public_key)
        return len(self.friends) - 1


def friends(roster: Roster, policy: str, clock: Clock | None = None) -> tuple[Friends, Node]:
    node = Node()
    config = cast(Config, SimpleNamespace(tox=SimpleNamespace(friend_requests=policy), hostname="h"))
    made = Friends(
        config,
        User("dad", "dad@home.example"),
        cast(ToxNode, node),
        Routes(ContactBook(), roster),
        lambda: None,
    )
    if clock is not None:
        made._log_budget = friends_module.LogBudget("dad", clock)
    return made, node


@pytest.mark.parametrize("policy", ["pending", "ignore", "accept"])
def test_a_flood_of_requests_is_logged_a_few_lines_a_minute(roster, caplog, policy):
    clock = Clock()
    dad, node = friends(roster, policy, clock)
    caplog.set_level(logging.INFO, "toxbridge.identity")
    for n in range(50):
        dad.on_request(key(n), b"spam")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == REQUEST_LOG_BURST + 1, lines
    assert "more than 5 friend requests from strangers in 60 s" in lines[-1]
    caplog.clear()
    clock.at += REQUEST_LOG_WINDOW
    dad.on_request(key(99), b"later")
    lines = [r.getMessage() for r in caplog.records]
    assert "45 more friend requests from strangers came in 60 s" in lines[0]
    assert key(99).hex() in lines[1]
    if policy == "pending":
        assert len(roster.pending()) == 51  # every request is kept, only the log is spared
    if policy == "accept":
        assert len(node.friends) == 51 and len(roster.accepted()) == 51


def test_a_requests_text_is_logged_escaped(roster, caplog):
    dad, _ = friends(roster, "pending")
    caplog.set_level(logging.INFO, "toxbridge.identity")
    dad.on_request(key(1), b"\x1b[2Jhi\r\n2026-01-01 toxbridge.daemon INFO fake" + b"x" * 900)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\x1b" not in line and "\n" not in line and "\\x1b[2Jhi\\r\\n2026" in line
    assert len(line) < 400
    assert roster.pending()[0].message.startswith("\x1b[2Jhi")  # kept as sent, escaped when shown


# ---------------------------------------------------------------- the text shown


@pytest.mark.parametrize(
    "text, shown",
    [
        ("Hi, it's Eve", "Hi, it's Eve"),
        ("Grüße 👋", "Grüße 👋"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("a\r\nb\tc\x00", "a\\r\\nb\\tc\\x00"),
        ("\u202eevil\u2028", "\\u202eevil\\u2028"),
        ("a\\x1b", "a\\\\x1b"),  # typed by the stranger: not the same as an escape made here
        (b"\xff\xfe ok", "\ufffd\ufffd ok"),
    ],
)
def test_printable(text, shown):
    assert printable(text) == shown


def test_printable_is_bounded():
    assert printable("a" * 500) == "a" * MAX_CHARS + "…"
    assert printable("\x1b" * 500) == "\\x1b" * (MAX_CHARS // 4) + "…"


@given(st.text())
def test_printable_never_lets_a_control_character_through(text):
    shown = printable(text)
    assert shown.isprintable()  # no newline, no escape, no bidi override: one inert line
    assert len(shown) <= MAX_CHARS + 1


class ProfileNode:
    """What Friends.record_friends uses of a ToxNode: the friend list kept in the profile."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys

    def friends(self) -> list[int]:
        return list(range(len(self.keys)))

    def friend_public_key(self, friend: int) -> bytes:
        return self.keys[friend]


def test_friends_from_before_the_roster_are_recorded_once(roster):
    """Friends in the profile that no contact names and the roster does not know (an older
    version made them, or a mail to their Tox ID) are recorded, so `contacts list` shows them
    and `contacts remove` can end them; a stranger already recorded keeps its own row."""
    roster.add_accepted("dad", key(2), "please add me")
    node = ProfileNode([key(1), key(2)])
    config = cast(Config, SimpleNamespace(tox=SimpleNamespace(friend_requests="pending"), hostname="h"))
    dad = Friends(
        config,
        User("dad", "dad@home.example"),
        cast(ToxNode, node),
        Routes(ContactBook(), roster),
        lambda: None,
    )
    dad.record_friends()
    dad.record_friends()
    rows = {(a.public_key, a.message) for a in roster.accepted()}
    assert rows == {(key(1), FROM_BEFORE), (key(2), "please add me")}
