"""Chat messages as mail, without servers: the mail a burst makes, the store, and the bursting
(gap, caps, retry, shutdown) with a fake Dovecot. test_chat_e2e.py does it with the real toxic."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from email.message import EmailMessage

from toxbridge.config import ChatSettings
from toxbridge.mail.chat_mail import Burst, ChatLine, compose, message_id, shown_name
from toxbridge.mail.chat_text import as_chat, split
from toxbridge.mail.headers import from_addresses, scan, sender_defect
from toxbridge.mail.smtpreply import Reply
from toxbridge.tox.chat_out import ChatSender
from toxbridge.tox.chat_store import ChatStore
from toxbridge.tox.chats import Chats
from toxbridge.tox.errors import ToxSendQueueFull

KEY = bytes(range(32))
AT = 1_764_590_000.0


HI = (ChatLine(AT, False, "hi"),)
KEY_ADDRESS = f"{KEY.hex()}@tox"


def text_of(mail) -> str:
    """The mail's text/plain body."""
    part = mail.get_body(("plain",))
    assert part is not None, mail
    return part.get_content()


def burst(lines=HI, name="grandson", address=KEY_ADDRESS, **kw) -> Burst:
    return Burst(KEY, name, address, tuple(lines), 1, len(lines), **kw)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_a_burst_is_one_mail_from_the_friend_with_the_verified_key():
    raw = compose(
        burst([ChatLine(AT, False, "hello"), ChatLine(AT + 5, True, "waves"), ChatLine(AT + 9, False, "ü")]),
        "bridge.example",
        "grandma@example.org",
        None,
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    mail = parse(raw)
    assert mail["From"].addresses[0].display_name == "grandson"
    assert mail["From"].addresses[0].addr_spec == f"{KEY.hex()}@tox"
    assert f"x-tox.key={KEY.hex()}" in mail["Authentication-Results"]
    assert mail["In-Reply-To"] is None and mail["References"] is None
    text = text_of(mail)
    assert [line.split("] ", 1)[1] for line in text.splitlines()] == ["hello", "* grandson waves", "ü"]
    header = scan(raw)  # the one header scanner reads it as Dovecot does: exactly one From
    assert not sender_defect(header) and from_addresses(header) == [f"{KEY.hex()}@tox"]


def test_a_burst_threads_under_the_friends_earlier_mails():
    mail = parse(compose(burst(), "b.example", "g@example.org", ("<first@b>", "<last@b>")))
    assert mail["In-Reply-To"] == "<last@b>"
    assert mail["References"] == "<first@b> <last@b>"
    second = parse(compose(burst(), "b.example", "g@example.org", ("<first@b>", "<first@b>")))
    assert second["References"] == "<first@b>"


def test_a_hostile_name_cannot_add_a_header():
    name = "evil\r\nBcc: everyone@example.org\r\nX-Toxbridge-Id: forged"
    raw = compose(burst(name=name), "b.example", "g@example.org", None)
    fields = [line.split(b":", 1)[0] for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")]
    assert b"Bcc" not in fields and fields.count(b"X-Toxbridge-Id") == 1
    assert "\n" not in shown_name(name, KEY)
    assert shown_name("  \t", KEY) == KEY.hex()[:8].upper()


def test_the_same_messages_make_the_same_message_id_and_more_make_another():
    assert message_id(burst(), "b") == message_id(burst(), "b")
    longer = Burst(KEY, "n", "a@tox", (ChatLine(AT, False, "x"),), 1, 2)
    assert message_id(longer, "b") != message_id(burst(), "b")


def test_dropped_messages_are_said_in_the_mail():
    mail = parse(compose(burst(dropped=1234), "b", "g@example.org", None))
    assert "1234 more messages" in text_of(mail)


def test_the_store_keeps_a_burst_until_it_is_delivered(tmp_path):
    store = ChatStore(tmp_path / "chat.sqlite")
    store.add("dora", KEY, AT, "normal", "n", b"one")
    store.add("dora", KEY, AT + 1, "action", "n", b"two")
    again = ChatStore(tmp_path / "chat.sqlite")  # another process (a restart) sees it at once
    assert [m.text for m in again.burst("dora", KEY)] == [b"one", b"two"]
    assert again.size("dora", KEY) == (2, 6) and again.waiting("dora") == [KEY]
    first = again.burst("dora", KEY)[0].id
    store.add("dora", KEY, AT + 2, "normal", "n", b"three")  # arrived while the first was delivered
    again.delivered("dora", KEY, first + 1, "<m1@b>")
    assert [m.text for m in again.burst("dora", KEY)] == [b"three"]
    assert again.thread("dora", KEY) == ("<m1@b>", "<m1@b>")
    again.delivered("dora", KEY, first + 2, "<m2@b>")
    assert again.thread("dora", KEY) == ("<m1@b>", "<m2@b>") and again.waiting("dora") == []
    store.close()
    again.close()


class Dovecot:
    def __init__(self, replies=()):
        self.mails: list[tuple[str, bytes]] = []
        self.replies = list(replies)

    async def deliver(self, sender: str, message: bytes) -> Reply:
        reply = self.replies.pop(0) if self.replies else Reply(250, "2.0.0 Saved")
        if reply.code < 300:
            self.mails.append((sender, message))
        return reply


def chats(tmp_path, dovecot, told=None, **settings) -> tuple[Chats, ChatStore]:
    store = ChatStore(tmp_path / "chat.sqlite")
    config = ChatSettings(**{"burst_gap": 0.05, **settings})
    tell = (lambda key, text: told.append((key, text))) if told is not None else (lambda key, text: None)
    return Chats(
        store, config, "dora", "dora@d.test", "b.test", dovecot.deliver, lambda k, n: (n, "x@tox"), tell=tell
    ), store


async def settle(dovecot, count, timeout=5.0):
    async with asyncio.timeout(timeout):
        while len(dovecot.mails) < count:
            await asyncio.sleep(0.01)


def test_messages_a_gap_apart_make_separate_threaded_mails(tmp_path):
    async def run():
        dovecot = Dovecot()
        chat, store = chats(tmp_path, dovecot, burst_gap=0.2)
        for text in (b"a", b"b", b"c"):
            chat.on_message(KEY, "n", False, text)
            await asyncio.sleep(0.02)  # well inside the gap: one burst
        await settle(dovecot, 1)
        chat.on_message(KEY, "n", True, b"later")
        await settle(dovecot, 2)
        assert dovecot.mails[0][0] == f"{KEY.hex()}@tox"
        first, second = (parse(m) for _, m in dovecot.mails)
        assert text_of(first).count("] ") == 3
        assert second["In-Reply-To"] == first["Message-ID"]
        assert store.waiting("dora") == []

    asyncio.run(run())


def test_a_flood_keeps_only_the_caps_on_disk(tmp_path):
    async def run():
        dovecot = Dovecot()
        chat, store = chats(tmp_path, dovecot, burst_gap=0.2, burst_max_messages=10, burst_max_bytes=100)
        for i in range(5000):
            chat.on_message(KEY, "n", False, b"%04d" % i)
        assert store.size("dora", KEY) == (10, 40)
        for _ in range(50):
            chat.on_message(KEY, "n", False, b"y" * 30)
        assert store.size("dora", KEY)[0] <= 12 and store.size("dora", KEY)[1] <= 100
        await settle(dovecot, 1)
        text = text_of(parse(dovecot.mails[0][1]))
        kept = store.size("dora", KEY)
        assert kept == (0, 0)
        assert "more messages in this conversation were not kept" in text
        assert int(text.split("(", 1)[1].split()[0]) == 5050 - text.count("] ")

    asyncio.run(run())


def test_bursts_across_the_gap_are_cut_at_the_day_cap_and_the_friend_told_once(tmp_path):
    """Hostile: a friend waits out the burst gap between floods; the day's cap stops it."""

    async def run():
        dovecot = Dovecot()
        told: list[tuple[bytes, str]] = []
        chat, store = chats(
            tmp_path, dovecot, told, burst_max_messages=10, day_max_messages=25, day_max_bytes=10_000
        )
        for burst in range(6):  # six bursts of ten, each delivered before the next
            for i in range(10):
                chat.on_message(KEY, "n", False, b"burst %d line %d" % (burst, i))
            await settle(dovecot, min(burst + 1, 3))
        await asyncio.sleep(0.2)  # (no burst is due: a wrong one would have had time to come)
        kept = sum(text_of(parse(m)).count("] ") for _, m in dovecot.mails)
        assert kept == 25 and len(dovecot.mails) == 3
        assert store.day("dora", KEY, time.time()) == (25, 25 * len(b"burst 0 line 0"))
        assert chat.cut_today[KEY][1] == 35
        assert len(told) == 1 and told[0][0] == KEY and "daily limit for mail to dora@d.test" in told[0][1]
        assert store.waiting("dora") == []
        # bytes count too: a new friend with a small byte cap
        other = b"\x02" * 32
        chat2, _ = chats(tmp_path, dovecot, told, day_max_bytes=100)
        chat2.on_message(other, "n", False, b"x" * 60)
        chat2.on_message(other, "n", False, b"x" * 60)
        assert chat2.cut_today[other][1] == 1 and len(told) == 2

    asyncio.run(run())


def test_the_day_cap_counts_per_utc_day(tmp_path):
    store = ChatStore(tmp_path / "chat.sqlite")
    day1 = 1_700_000_000.0 - (1_700_000_000 % 86400) + 86400 - 1  # the last second of a UTC day
    store.add("dora", KEY, day1, "normal", "n", b"late")
    store.add("dora", KEY, day1 + 2, "normal", "n", b"early!")
    assert store.day("dora", KEY, day1) == (1, 4)
    assert store.day("dora", KEY, day1 + 2) == (1, 6)


def test_a_refused_delivery_is_kept_and_tried_again(tmp_path, monkeypatch):
    monkeypatch.setattr("toxbridge.tox.chats.RETRY_SECONDS", 0.05)

    async def run():
        dovecot = Dovecot([Reply(451, "4.3.0 try later")])
        chat, store = chats(tmp_path, dovecot)
        chat.on_message(KEY, "n", False, b"keep me")
        await settle(dovecot, 1)
        assert b"keep me" in dovecot.mails[0][1] and store.waiting("dora") == []

    asyncio.run(run())


def test_stop_delivers_the_open_burst_and_start_what_a_kill_left(tmp_path):
    async def run():
        dovecot = Dovecot()
        chat, store = chats(tmp_path, dovecot, burst_gap=3600)
        chat.on_message(KEY, "n", False, b"open")
        await chat.stop()
        assert len(dovecot.mails) == 1
        store.add("dora", KEY, AT, "normal", "n", b"left by a kill")
        after = Chats(
            store,
            ChatSettings(burst_gap=3600),
            "dora",
            "d@d",
            "b",
            dovecot.deliver,
            lambda k, n: (n, "x@tox"),
        )
        after.start()
        await settle(dovecot, 2)
        assert b"left by a kill" in dovecot.mails[1][1]

    asyncio.run(run())


# ---- mail to chat (mail.chat_text, tox.chat_out)


def test_split_cuts_at_lines_then_words_and_never_inside_a_character():
    text = "first line\n" + " ".join(["wörd"] * 50) + "\n" + "x" * 30
    pieces = split(text, 40)
    assert all(len(p) <= 40 for p in pieces)
    assert pieces[0] == b"first line"
    assert b" ".join(pieces[1:-1]).decode().split() == ["wörd"] * 50
    assert pieces[-1] == b"x" * 30
    long = split("é" * 100, 7)  # one word longer than a message: cut at character boundaries
    assert all(len(p) <= 7 for p in long) and b"".join(long).decode() == "é" * 100


def test_mail_becomes_subject_and_text_without_the_quoted_reply():
    raw = (
        b"From: Grandma <g@example.org>\r\nSubject: Sunday\r\n\r\n"
        b"See you at six.\r\n\r\nOn Sat, 1 Dec 2026, Tom wrote:\r\n> will you come?\r\n> bring cake\r\n"
    )
    chat = as_chat(raw, 1372)
    assert chat.messages == (b"Mail from Grandma <g@example.org>: Sunday\n\nSee you at six.",)


def test_html_mail_becomes_text():
    raw = (
        b"Subject: hi\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><style>p {color: red}</style></head><body><p>Hello&nbsp;<b>you</b></p>"
        b"<p>second</p><script>alert(1)</script></body></html>\r\n"
    )
    text = b"\n".join(as_chat(raw, 1372).messages).decode()
    assert "Hello\xa0you" in text or "Hello you" in text
    assert "second" in text and "color" not in text and "alert" not in text and "<" not in text


def test_attachments_are_found():
    mail = EmailMessage()
    mail["Subject"] = "photo"
    mail.set_content("look")
    mail.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename="cat.png")
    chat = as_chat(mail.as_bytes(), 1372)
    assert chat.attachments == (("cat.png", b"\x89PNG"),)


class ChatNode:
    """The toxcore calls ChatSender makes, with receipts the test hands out."""

    def __init__(self, online=True, full=0):
        self.online, self.full = online, full
        self.sent: list[tuple[int, bytes]] = []

    def friend_connection(self, friend):
        return 2 if self.online else 0

    def friend_label(self, friend):
        return "f"

    def send_message(self, friend, text):
        if self.full:
            self.full -= 1
            raise ToxSendQueueFull("full", function="tox_friend_send_message", code=3, code_name="SENDQ")
        self.sent.append((friend, text))
        return len(self.sent)


def test_250_only_after_every_read_receipt():
    async def run():
        node = ChatNode(full=3)
        sender = ChatSender(node, 5.0)  # type: ignore[arg-type]
        raw = b"Subject: s\r\n\r\n" + b" ".join([b"w" * 100] * 40) + b"\r\n"
        expected = len(as_chat(raw, 1372).messages)
        assert expected > 1
        task = asyncio.ensure_future(sender.send(7, raw))
        while len(node.sent) < expected:  # three tries found the send queue full first
            await asyncio.sleep(0.01)
        for number in range(1, len(node.sent)):
            sender.on_read_receipt(7, number)
        await asyncio.sleep(0.05)
        assert not task.done()  # one receipt missing
        sender.on_read_receipt(7, len(node.sent))
        reply = await task
        assert reply.code == 250 and f"{expected} chat message" in str(reply)
        assert all(len(text) <= 1372 for _, text in node.sent)

    asyncio.run(run())


def test_offline_or_no_receipt_is_4xx():
    async def run():
        assert (await ChatSender(ChatNode(online=False), 5.0).send(1, b"Subject: s\r\n\r\nx\r\n")).code == 451  # type: ignore[arg-type]
        sender = ChatSender(ChatNode(), 0.1)  # type: ignore[arg-type]
        assert (await sender.send(1, b"Subject: s\r\n\r\nx\r\n")).code == 451
        sender = ChatSender(ChatNode(), 5.0)  # type: ignore[arg-type]
        task = asyncio.ensure_future(sender.send(1, b"Subject: s\r\n\r\nx\r\n"))
        await asyncio.sleep(0.05)
        sender.on_friend_offline(1)
        reply = await task
        assert reply.code == 451 and "went offline before it confirmed every message" in reply.text
        assert "uses a Tox chat app (not a mail bridge)" in reply.text and "Postfix" not in reply.text

    asyncio.run(run())


def test_a_burst_after_a_mail_to_the_friend_answers_that_mail(tmp_path):
    store = ChatStore(tmp_path / "chat.sqlite")
    store.answered("dora", KEY, "<mail-1@d>")  # no chat mail yet: the mail roots the thread
    assert store.thread("dora", KEY) == ("<mail-1@d>", "<mail-1@d>")
    store.delivered("dora", KEY, 0, "<chat-1@d>")
    store.answered("dora", KEY, "<mail-2@d>")
    assert store.thread("dora", KEY) == ("<mail-1@d>", "<mail-2@d>")
    store.close()
