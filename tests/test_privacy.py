"""Outgoing mail sheds the household's own Received: lines and the listed headers; every other
byte stays. Unit tests of toxbridge/mail/privacy.py, the hook in Outbound.send, and one mail across Tox."""

from __future__ import annotations

import asyncio
import logging
import uuid
from types import SimpleNamespace
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toxbridge.config import Privacy
from toxbridge.contacts.routes import Routes
from toxbridge.mail.privacy import strip
from toxbridge.mail.smtpreply import Reply
from toxbridge.outbound import Outbound
from toxbridge.tox import wire
from toxbridge.tox.identity import Identity

DEFAULT = Privacy()
OFF = Privacy(strip_received=False, strip_headers=())

POSTFIX_RECEIVED = (
    b"Received: from laptop.lan (laptop.lan [192.168.1.23])\r\n"
    b"\tby pi.home.example (Postfix) with ESMTP id 4TqXyZ1abcz9sW\r\n"
    b"\tfor <bob@tox>; Mon,  1 Jan 2024 10:00:00 +0100 (CET)\r\n"
)
AMAVIS_RECEIVED = b"Received: from localhost by pi.home.example (amavis); Mon, 1 Jan 2024 10:00:00 +0100\r\n"
REST = (
    b"From: Alice <alice@alice.test>\r\n"
    b"To: bob@tox\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0)\r\n"
    b"  Gecko/20100101 Thunderbird/115.6.0\r\n"
    b"X-Originating-IP: [192.168.1.23]\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n" + "Grüße — the body stays.\r\nUser-Agent: this is body text\r\n".encode()
)


def joined(got) -> bytes:
    return b"".join(got.parts)


def test_postfix_received_and_listed_headers_go_the_rest_stays():
    got = strip(POSTFIX_RECEIVED + AMAVIS_RECEIVED + REST, DEFAULT)
    assert joined(got) == (
        b"From: Alice <alice@alice.test>\r\n"
        b"To: bob@tox\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n" + "Grüße — the body stays.\r\nUser-Agent: this is body text\r\n".encode()
    )
    assert got.removed == (("Received", 2), ("User-Agent", 1), ("X-Originating-IP", 1))


def test_summary_names_fields_never_values():
    got = strip(POSTFIX_RECEIVED + REST, DEFAULT)
    assert got.summary() == "Received x1, User-Agent x1, X-Originating-IP x1"
    assert (
        strip(REST.replace(b"User-Agent", b"X-Other").replace(b"X-Originating-IP", b"X-O"), DEFAULT).summary()
        == "nothing"
    )


def test_only_the_leading_block_of_received_fields():
    """A Received: below another field is not our Postfix's: it stays, and so do all after it."""
    message = (
        POSTFIX_RECEIVED
        + b"X-Spam: no\r\n"
        + AMAVIS_RECEIVED
        + b"Received: from elsewhere\r\nSubject: s\r\n\r\nbody\r\n"
    )
    got = strip(message, DEFAULT)
    assert (
        joined(got)
        == b"X-Spam: no\r\n" + AMAVIS_RECEIVED + b"Received: from elsewhere\r\nSubject: s\r\n\r\nbody\r\n"
    )
    assert got.removed == (("Received", 1),)


def test_no_received_at_the_top_none_removed():
    message = b"Subject: s\r\n" + POSTFIX_RECEIVED + b"\r\nbody\r\n"
    assert joined(strip(message, DEFAULT)) == message


def test_names_match_whole_and_in_any_case():
    message = (
        b"user-agent: a\r\nUSER-AGENT: b\r\nUser-Agent-X: kept\r\nX-User-Agent: kept\r\n"
        b"X-Mailer2: kept\r\nx-MAILER: c\r\nReceived-SPF: kept\r\nSubject: s\r\n\r\n"
    )
    got = strip(message, DEFAULT)
    assert joined(got) == (
        b"User-Agent-X: kept\r\nX-User-Agent: kept\r\nX-Mailer2: kept\r\n"
        b"Received-SPF: kept\r\nSubject: s\r\n\r\n"
    )
    assert got.removed == (("User-Agent", 2), ("X-Mailer", 1))


def test_folded_lines_go_with_their_field_obs_folding_included():
    """Continuation lines start with SP or HT; obs-FWS allows one of only whitespace; obs-optional
    allows whitespace before the colon."""
    message = (
        b"X-Mailer: one\r\n\t two\r\n \r\n\t\r\n  three\r\n"
        b"Subject: keep\r\n folded too\r\n"
        b"User-Agent \t: obsolete form\r\n\tcontinued\r\n"
        b"X-Originating-IP:\r\n [10.0.0.1]\r\n"
        b"\r\n body\r\n"
    )
    got = strip(message, DEFAULT)
    assert joined(got) == b"Subject: keep\r\n folded too\r\n\r\n body\r\n"
    assert got.removed == (("X-Mailer", 1), ("User-Agent", 1), ("X-Originating-IP", 1))


def test_lf_and_mixed_line_ends_and_8bit_bytes_kept():
    message = (
        b"Received: from a\n\tby b\r\n"
        b"Subject: \xc3\xa4\xff\r\n"
        b"User-Agent: \xe2\x80\x94x\n folded\r\n"
        b"X-Raw: bare\rcarriage return\n"
        b"\n"
        b"\x00\xff\xfe body\r\nX-Mailer: not a header here\n"
    )
    got = strip(message, DEFAULT)
    assert joined(got) == (
        b"Subject: \xc3\xa4\xff\r\n"
        b"X-Raw: bare\rcarriage return\n"
        b"\n"
        b"\x00\xff\xfe body\r\nX-Mailer: not a header here\n"
    )


@pytest.mark.parametrize(
    "message, expected",
    [
        (b"Subject: only a header\r\nUser-Agent: x\r\n", b"Subject: only a header\r\n"),
        (b"Subject: s\r\nUser-Agent: x", b"Subject: s\r\n"),  # no line end at all at the end
        (b"User-Agent: x\r\nSubject: s", b"Subject: s"),
        (b"Received: x\r\n\r\n", b"\r\n"),
        (b"User-Agent: x", b""),
        (b"", b""),
        (b"\r\n\r\nUser-Agent: x\r\n", b"\r\n\r\nUser-Agent: x\r\n"),  # empty header: all is body
        (b"Subject: s\r\n\r\n", b"Subject: s\r\n\r\n"),
    ],
)
def test_messages_without_a_body_or_a_blank_line(message, expected):
    assert joined(strip(message, DEFAULT)) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"not a header line\r\n",  # no colon
        b"Bad Name: x\r\n",  # a space inside the name
        b": no name\r\n",
        b"N\xc3\xa4me: 8-bit name\r\n",
    ],
)
def test_a_line_that_is_no_proper_field_does_not_end_the_header(line):
    """As for Dovecot on the far side: the header goes on to the empty line, so a listed field
    after such a line goes too; the line itself stays, and the body is never touched."""
    message = b"X-Mailer: m\r\nSubject: s\r\n" + line + b"User-Agent: x\r\n\r\nUser-Agent: body text\r\n"
    got = strip(message, DEFAULT)
    assert joined(got) == b"Subject: s\r\n" + line + b"\r\nUser-Agent: body text\r\n"
    assert got.removed == (("X-Mailer", 1), ("User-Agent", 1))


def test_whitespace_before_the_colon_still_names_the_field():
    message = b"User-Agent : x\r\nX-Mailer\t: y\r\nSubject: s\r\n\r\nbody\r\n"
    got = strip(message, DEFAULT)
    assert joined(got) == b"Subject: s\r\n\r\nbody\r\n"
    assert got.removed == (("User-Agent", 1), ("X-Mailer", 1))


def test_a_body_starting_with_whitespace_after_the_blank_line_is_kept():
    message = b"Subject: s\r\n\r\n User-Agent: x\r\n"
    assert joined(strip(message, DEFAULT)) == message


def test_switched_off_nothing_is_stripped():
    message = POSTFIX_RECEIVED + REST
    got = strip(message, OFF)
    first = got.parts[0]  # read before == narrows parts to tuple[bytes]
    assert got.parts == (message,) and first.obj is message and got.removed == ()


def test_strip_received_off_keeps_received_strips_listed():
    got = strip(POSTFIX_RECEIVED + REST, Privacy(strip_received=False))
    assert joined(got).startswith(POSTFIX_RECEIVED)
    assert b"User-Agent: Mozilla" not in joined(got) and b"X-Originating-IP" not in joined(got)
    assert got.removed == (("User-Agent", 1), ("X-Originating-IP", 1))


def test_no_listed_headers_strips_only_received():
    got = strip(POSTFIX_RECEIVED + REST, Privacy(strip_headers=()))
    assert joined(got) == REST
    assert got.removed == (("Received", 1),)


def test_listed_received_means_every_received():
    message = POSTFIX_RECEIVED + b"Subject: s\r\n" + AMAVIS_RECEIVED + b"\r\n"
    got = strip(message, Privacy(strip_received=False, strip_headers=("received",)))
    assert joined(got) == b"Subject: s\r\n\r\n"
    assert got.removed == (("received", 2),)


def test_nothing_to_remove_sends_the_same_bytes_uncopied():
    message = REST.replace(b"User-Agent", b"X-Kept").replace(b"X-Originating-IP", b"X-Kept-Too")
    (only,) = strip(message, DEFAULT).parts
    assert only.obj is message and only == message


def test_the_body_is_a_view_of_the_original_not_a_copy():
    got = strip(POSTFIX_RECEIVED + REST, DEFAULT)
    head, rest = got.parts
    assert isinstance(rest, memoryview) and head + rest == joined(got)


# --- property: the output is the input minus exactly the removed fields ----------------------

LISTED = ("User-Agent", "X-Mailer", "X-Originating-IP")
_NAME_CHARS = st.sampled_from([chr(c) for c in range(0x21, 0x7F) if c != 0x3A])


async def _a_bridge(key: bytes) -> bool:
    """Identity.learn_kind of a friend that greeted as a bridge: not a chat app."""
    return False


def _case(name: str):
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(name, upper, strict=False))
    )


names = st.one_of(
    st.sampled_from(LISTED + ("Received",)).flatmap(_case),
    st.sampled_from(["User-Agent-X", "X-User-Agent", "X-Mailer2", "Received-SPF", "Subject", "From"]),
    st.text(_NAME_CHARS, min_size=1, max_size=12),
)
line_ends = st.sampled_from([b"\r\n", b"\n"])
# A value: any bytes but the line feed (8-bit, NUL, bare CR, colons); continuations start with SP/HT.
text = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))


@st.composite
def fields(draw):
    name = draw(names).encode()
    space = draw(st.sampled_from([b"", b"", b" ", b"\t "]))  # obs-optional: WSP before the colon
    lines = [name + space + b":" + draw(text) + draw(line_ends)]
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(st.sampled_from([b" ", b"\t"])) + draw(text) + draw(line_ends))
    return name.decode().lower(), b"".join(lines)


@st.composite
def messages(draw):
    header = draw(st.lists(fields(), max_size=12))
    if draw(st.booleans()):
        tail = draw(line_ends) + draw(st.binary(max_size=200))  # blank line and body
    else:
        tail = b""
        if header and draw(st.booleans()):  # the very last line without a line end
            name, field = header[-1]
            header[-1] = (name, field.rstrip(b"\r\n"))
    return header, tail


def expected(header, tail, privacy: Privacy) -> tuple[bytes, dict[str, int]]:
    listed = {n.lower() for n in privacy.strip_headers}
    kept: list[bytes] = []
    removed: dict[str, int] = {}
    top = privacy.strip_received
    for name, field in header:
        top = top and name == "received"
        if top or name in listed:
            removed[name] = removed.get(name, 0) + 1
        else:
            kept.append(field)
    return b"".join(kept) + tail, removed


privacies = st.builds(
    Privacy,
    strip_received=st.booleans(),
    strip_headers=st.lists(st.sampled_from(LISTED + ("X-Custom", "Received")), unique=True).map(tuple),
)


@settings(max_examples=500)
@given(messages(), privacies)
def test_output_is_input_minus_exactly_the_removed_fields(message, privacy):
    header, tail = message
    raw = b"".join(f for _, f in header) + tail
    got = strip(raw, privacy)
    want, removed = expected(header, tail, privacy)
    assert joined(got) == want
    assert sum(count for _, count in got.removed) == sum(removed.values())
    assert {name.lower() for name, _ in got.removed} == set(removed)


@given(messages())
def test_switched_off_is_the_identity(message):
    header, tail = message
    raw = b"".join(f for _, f in header) + tail
    assert joined(strip(raw, OFF)) == raw


# --- the hook in Outbound.send ------------------------------------------------------------------


class _Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[int, wire.Envelope, tuple[bytes | memoryview, ...]]] = []  # message in parts

    async def send(self, friend, envelope, message):
        self.sent.append((friend, envelope, message))
        return [Reply(250, "2.0.0 Ok")] * len(envelope.recipients)


def _bridge(privacy: Privacy) -> tuple[Outbound, _Sender]:
    sender = _Sender()
    keys = {"bob@tox": b"\x01" * 32, "carol@tox": b"\x02" * 32}
    identity = SimpleNamespace(
        user=SimpleNamespace(address="alice@alice.test", mailbox="alice"),
        config=SimpleNamespace(privacy=privacy),
        node=SimpleNamespace(friend_by_public_key=lambda key: key[0]),
        sender=sender,
        learn_kind=_a_bridge,
    )
    routes = SimpleNamespace(route=lambda mailbox, rcpt: SimpleNamespace(public_key=keys[rcpt]))
    # test doubles, with only what Outbound uses
    return Outbound([cast(Identity, identity)], cast(Routes, routes)), sender


def test_bridge_sends_the_stripped_mail_to_every_friend_and_logs_postfix_queue_id(caplog):
    bridge, sender = _bridge(DEFAULT)
    with caplog.at_level(logging.DEBUG, logger="toxbridge.bridge"):
        replies = asyncio.run(
            bridge.send("alice@alice.test", ["bob@tox", "carol@tox"], POSTFIX_RECEIVED + REST)
        )
    assert [r.code for r in replies] == [250, 250]
    want = joined(strip(POSTFIX_RECEIVED + REST, DEFAULT))
    assert [(f, b"".join(m)) for f, _, m in sender.sent] == [(1, want), (2, want)]
    assert all(e.size == len(want) for _, e, _ in sender.sent)
    lines = [r.getMessage() for r in caplog.records]
    assert "4TqXyZ1abcz9sW: privacy: removed Received x1, User-Agent x1, X-Originating-IP x1" in lines
    delivered = [line for line in lines if "status=sent" in line]
    assert len(delivered) == 2 and all(line.startswith("4TqXyZ1abcz9sW: to=<") for line in delivered)
    assert all("Thunderbird" not in line and "192.168" not in line for line in lines)


def test_bridge_with_privacy_off_sends_the_mail_unchanged():
    bridge, sender = _bridge(OFF)
    asyncio.run(bridge.send("alice@alice.test", ["bob@tox"], POSTFIX_RECEIVED + REST))
    assert b"".join(sender.sent[0][2]) == POSTFIX_RECEIVED + REST


# --- one mail across Tox ----------------------------------------------------------------------

ARRIVAL = 60.0
# What the receiving side puts on top: the bridge's trace headers, then Dovecot's own.
ADDED_ON_ARRIVAL = {"x-toxbridge-id", "received", "authentication-results", "return-path", "delivered-to"}


def _field_blocks(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines, CRLF line ends (as IMAP gives them)."""
    blocks: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and blocks:
            blocks[-1] += line + b"\r\n"
        else:
            blocks.append(line + b"\r\n")
    return blocks


def _name(block: bytes) -> str:
    return block.split(b":", 1)[0].strip().decode().lower()


@pytest.mark.integration
def test_mail_arrives_without_stripped_headers_rest_byte_identical(network):
    from toxbridge.lab.ports import wait_until

    alice, bob = network["alice"], network["bob"]
    mid = f"<{uuid.uuid4()}@alice.test>"
    head = (
        f"From: Alice <alice@alice.test>\r\n"
        f"To: bob <{bob.tox_address('bob')}>\r\n"
        f"Subject: privacy\r\n"
        f"Date: Mon, 1 Jan 2024 10:00:00 +0100\r\n"
        f"Message-ID: {mid}\r\n"
        f"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0)\r\n"
        f"\tGecko/20100101 Thunderbird/115.6.0\r\n"
        f"X-Originating-IP: [192.168.77.23]\r\n"
        f"X-Custom: stays,\r\n  folded\r\n"
        f"X-Mailer: PrivacyTestMailer 9.9\r\n"
        f"User-Agent-X: stays too\r\n"
        f"Received: from an-earlier-hop by a-relay; Sun, 31 Dec 2023 10:00:00 +0100\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n"
    ).encode()
    body = "Grüße — User-Agent: in the body stays.\r\nX-Mailer: so does this\r\n".encode()
    msg = head + b"\r\n" + body
    sent_blocks = _field_blocks(head[:-2])
    stripped = {"user-agent", "x-originating-ip", "x-mailer"}
    kept = b"".join(b for b in sent_blocks if _name(b) not in stripped)

    mark = alice.log_mark()
    alice.postfix.send(alice.address("alice"), [bob.tox_address("bob")], msg)
    found: list[bytes] = []

    def arrived() -> bool:
        found[:] = [m for m in bob.dovecot.fetch_inbox("bob") if mid.encode() in m]
        return bool(found)

    assert wait_until(arrived, ARRIVAL, interval=0.2), "the mail did not arrive"
    (got,) = found
    got_head, _, got_body = got.partition(b"\r\n\r\n")
    assert got_body == body
    got_head += b"\r\n"
    assert got_head.endswith(kept), got_head.decode("utf-8", "replace")
    added = _field_blocks(got_head[: -len(kept) - 2])
    assert {_name(b) for b in added} <= ADDED_ON_ARRIVAL, added
    assert all(
        b.startswith(b"Received: from tox (") or b"with LMTP" in b for b in added if _name(b) == "received"
    ), added  # bob's bridge's and Dovecot's only
    for value in (b"Thunderbird", b"192.168.77.23", b"PrivacyTestMailer", b"(Postfix)", b"with ESMTP"):
        assert value not in got_head, value
    assert [b for b in _field_blocks(got_head[:-2]) if _name(b) == "received"][-1].startswith(
        b"Received: from an-earlier-hop"
    ), "the sender's own lower Received stays"
    alice.wait_log("status=sent", ARRIVAL, since=mark)
    with open(alice.bridge_log, "rb") as log:
        log.seek(mark)
        assert not [v for v in (b"Thunderbird", b"192.168.77.23", b"PrivacyTestMailer") if v in log.read()]
