"""Files from plain Tox chat apps, without servers: the name and type their attachment gets, the
store and the burst that carry them, and the transfers (size limit, the partial-file caps shared
with mail, a completed file on disk before it is counted) with a fake node. test_chat_e2e.py
sends a file with the real toxic."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import time
from pathlib import Path

from toxbridge.config import ChatSettings
from toxbridge.mail.chat_mail import attachment_name, content_type
from toxbridge.mail.smtpreply import Reply
from toxbridge.tox.chat_files import ChatFiles
from toxbridge.tox.chat_store import ChatStore
from toxbridge.tox.chats import Chats
from toxbridge.tox.library import FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME
from toxbridge.tox.partial import Partials

KIB = 1024
KEY = bytes(range(32))


def test_a_file_name_keeps_only_its_last_part_printable_and_visible():
    assert attachment_name(b"../../etc/passwd") == "passwd"
    assert attachment_name(b"C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert attachment_name(b"..") == "file" and attachment_name(b"") == "file"
    assert attachment_name(b".bashrc") == "bashrc"  # never a hidden file in a save dialog
    assert attachment_name(b"a\r\nContent-Type: text\x00.txt") == "a Content-Type: text_.txt"
    long = attachment_name(b"x" * 500 + b".pdf")
    assert len(long) <= 120 and long.endswith(".pdf")
    assert attachment_name("ünïcode €.txt".encode()) == "ünïcode €.txt"
    assert attachment_name(b"\xff\xfe.png") == "\ufffd\ufffd.png"


def test_the_type_is_guessed_from_the_name_else_octet_stream():
    assert content_type("cat.jpg") == ("image", "jpeg")
    assert content_type("report.pdf") == ("application", "pdf")
    assert content_type("notes") == ("application", "octet-stream")
    assert content_type("backup.tar.gz") == ("application", "octet-stream")  # gzip bytes, not a tar


class Dovecot:
    def __init__(self) -> None:
        self.mails: list[bytes] = []
        self.replies: list[Reply] = []

    async def deliver(self, sender: str, message: bytes) -> Reply:
        reply = self.replies.pop(0) if self.replies else Reply(250, "2.0.0 Saved")
        if reply.code < 300:
            self.mails.append(message)
        return reply


def make_chats(
    tmp_path: Path, dovecot: Dovecot, files_dir: Path, settings: ChatSettings | None = None
) -> tuple[Chats, ChatStore]:
    store = ChatStore(tmp_path / "chat.sqlite")
    chats = Chats(
        store,
        settings or ChatSettings(burst_gap=0.05),
        "dora",
        "dora@d.test",
        "b.test",
        dovecot.deliver,
        lambda k, n: (n, "x@tox"),
        files_dir=files_dir,
    )
    return chats, store


async def settle(dovecot: Dovecot, count: int) -> None:
    async with asyncio.timeout(5):
        while len(dovecot.mails) < count:
            await asyncio.sleep(0.01)


def test_a_file_joins_the_open_burst_and_is_removed_once_delivered(tmp_path):
    files = tmp_path / "files"
    files.mkdir()

    async def run():
        dovecot = Dovecot()
        dovecot.replies = [Reply(451, "4.3.0 busy")]  # the first try fails: the file is kept
        chats, store = make_chats(tmp_path, dovecot, files)
        photo = files / "p1"
        photo.write_bytes(b"\xff\xd8 jpeg bytes")
        chats.on_message(KEY, "n", False, b"look at this")
        chats.on_file(KEY, "n", "cat.jpg", photo)
        assert chats.file_bytes(KEY) == len(b"\xff\xd8 jpeg bytes")
        await asyncio.sleep(0.3)
        assert not dovecot.mails and photo.exists()  # refused: still there for the retry
        await chats.stop()  # the stop delivers it
        assert len(dovecot.mails) == 1 and not photo.exists()
        mail = email.message_from_bytes(dovecot.mails[0], policy=email.policy.default)
        (part,) = list(mail.iter_attachments())
        assert (part.get_filename(), part.get_content_type(), part.get_content()) == (
            "cat.jpg",
            "image/jpeg",
            b"\xff\xd8 jpeg bytes",
        )
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert text.index("look at this") < text.index("(sent the file cat.jpg: attached)")
        assert store.burst("dora", KEY) == [] and chats.file_bytes(KEY) == 0

    asyncio.run(run())


def test_start_removes_files_no_burst_holds_and_keeps_the_others(tmp_path):
    files = tmp_path / "files"
    files.mkdir()

    async def run():
        dovecot = Dovecot()
        chats, store = make_chats(tmp_path, dovecot, files)
        kept, orphan = files / "kept", files / "orphan"  # orphan: a kill between the move and the row
        kept.write_bytes(b"kept")
        orphan.write_bytes(b"orphan")
        store.add_file("dora", KEY, 0.0, "n", "kept.txt", kept)
        chats.start()
        assert kept.exists() and not orphan.exists()
        await settle(dovecot, 1)
        assert b"a2VwdA==" in dovecot.mails[0]  # base64 of b"kept"

    asyncio.run(run())


class Node:
    """The toxcore calls ChatFiles makes, recorded."""

    def __init__(self) -> None:
        self.controls: list[tuple[int, int, int]] = []
        self.messages: list[bytes] = []

    def friend_public_key(self, friend: int) -> bytes:
        return bytes([friend + 1]) * 32

    def friend_label(self, friend: int) -> str:
        return f"#{friend}"

    def file_id(self, friend: int, number: int) -> bytes:
        return bytes([number]) * 32

    def file_control(self, friend: int, number: int, control: int) -> None:
        self.controls.append((friend, number, control))

    def file_seek(self, friend: int, number: int, position: int) -> None:
        pass

    def send_message(self, friend: int, text: bytes) -> int:
        self.messages.append(text)
        return len(self.messages)


def make_files(tmp_path: Path, max_size: int = 100 * KIB, per_friend: int = 256 * KIB):
    partial_root = tmp_path / "partial"
    (partial_root / "dora").mkdir(parents=True)
    files = tmp_path / "files"
    files.mkdir()
    partials = Partials(partial_root, per_friend, 10 * per_friend, 0, free_space=lambda _: 1 << 40)
    done: list[tuple[bytes, str, Path, bytes]] = []
    used: dict[bytes, int] = {}

    def on_done(key: bytes, name: str, filename: str, path: Path) -> None:
        done.append((key, filename, path, path.read_bytes()))  # on disk when counted
        used[key] = used.get(key, 0) + path.stat().st_size

    node = Node()
    chat_files = ChatFiles(
        node,  # type: ignore[arg-type]
        "dora",
        max_size,
        partial_root / "dora",
        files,
        partials,
        on_done,
        lambda key: used.get(key, 0),
        lambda key: 1 << 40,
        lambda key: "n",
    )
    return chat_files, node, done, partial_root / "dora", files


def test_a_completed_file_is_moved_out_of_the_partials_before_it_is_counted(tmp_path):
    chat_files, node, done, partial, files = make_files(tmp_path)
    chat_files.offer(0, 1, 5000, b"photo.png")
    assert node.controls == [(0, 1, FILE_CONTROL_RESUME)]
    data = bytes(range(256)) * 20  # 5120 bytes: too long by 120
    chat_files.on_chunk(0, 1, 0, data[:5000])
    chat_files.on_chunk(0, 1, 5000, b"")
    ((key, name, path, content),) = done
    assert (key, name, content) == (bytes([1]) * 32, "photo.png", data[:5000])
    assert path.parent == files and not list(partial.iterdir())


def test_too_big_or_too_much_for_one_mail_is_refused_with_a_chat_line(tmp_path):
    chat_files, node, done, partial, _ = make_files(tmp_path, max_size=100 * KIB)
    chat_files.offer(0, 1, 100 * KIB + 1, b"film.mkv")
    assert node.controls == [(0, 1, FILE_CONTROL_CANCEL)]
    assert b'"film.mkv" is too big' in node.messages[-1] and b"102400 bytes" in node.messages[-1]
    chat_files.offer(0, 2, 60 * KIB, b"a.bin")
    chat_files.offer(0, 3, 60 * KIB, b"b.bin")  # both would not fit in one mail's limit
    assert node.controls[-1] == (0, 3, FILE_CONTROL_CANCEL)
    assert b"does not fit in the e-mail of this conversation" in node.messages[-1]


def test_a_chat_friend_offering_and_cancelling_keeps_at_most_its_cap_on_disk(tmp_path):
    """The attack on the disk: offer a file, send most of it, cancel, again with a new file_id
    each time. The shared Partials keeps the friend's idle partial files within its cap."""
    cap = 256 * KIB
    chat_files, node, done, partial, _ = make_files(tmp_path, max_size=100 * KIB, per_friend=cap)
    chunk = b"x" * 1000
    for number in range(1, 40):
        chat_files.offer(0, number, 90 * KIB, b"junk.bin")
        for position in range(0, 80 * KIB, len(chunk)):
            chat_files.on_chunk(0, number, position, chunk)
        chat_files.on_control(0, number, FILE_CONTROL_CANCEL)
        on_disk = sum(p.stat().st_size for p in partial.iterdir())
        assert on_disk <= cap
    assert not done
    assert sum(1 for c in node.controls if c[2] == FILE_CONTROL_RESUME) == 39  # each admitted


def test_a_file_that_ends_short_never_becomes_an_attachment(tmp_path):
    chat_files, node, done, partial, _ = make_files(tmp_path)
    chat_files.offer(0, 1, 5000, b"x.bin")
    chat_files.on_chunk(0, 1, 0, b"y" * 3000)
    chat_files.on_chunk(0, 1, 3000, b"")  # the end, 2000 bytes early
    assert not done and not list(partial.iterdir())
    chat_files.offer(0, 2, 5000, b"x.bin")
    chat_files.on_chunk(0, 2, 100, b"y")  # out of order
    assert node.controls[-1] == (0, 2, FILE_CONTROL_CANCEL) and not done


# ---- mail to chat: attachments offered as file transfers (tox.chat_offers, tox.chat_out)


class OfferNode:
    """The toxcore calls ChatSender and FileOffers make; receipts and file events by the test."""

    def __init__(self) -> None:
        self.online = True
        self.sent: list[bytes] = []
        self.offers: list[tuple[int, bytes, int]] = []  # (file number, name, size)
        self.chunks: dict[int, bytearray] = {}
        self.controls: list[tuple[int, int]] = []

    def friend_connection(self, friend):
        return 2 if self.online else 0

    def friend_label(self, friend):
        return "f"

    def send_message(self, friend, text):
        self.sent.append(text)
        return len(self.sent)

    def file_send(self, friend, kind, size, file_id, filename):
        number = len(self.offers)
        self.offers.append((number, filename, size))
        self.chunks[number] = bytearray()
        return number

    def file_send_chunk(self, friend, number, position, data):
        self.chunks[number][position:] = data

    def file_control(self, friend, number, control):
        self.controls.append((number, control))


def mail_with(*files: tuple[str, bytes]) -> bytes:
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["Subject"] = "photos"
    mail.set_content("see the attachments")
    for name, data in files:
        mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return mail.as_bytes()


def offering(node: OfferNode, accept_wait: float = 5.0, max_file: int = 10 * KIB):
    from toxbridge.tox.chat_offers import FileOffers
    from toxbridge.tox.chat_out import ChatSender

    offers = FileOffers(node, accept_wait, 5.0)  # type: ignore[arg-type]
    return ChatSender(node, 5.0, offers, max_file), offers  # type: ignore[arg-type]


async def receipts(node: OfferNode, sender, count: int) -> None:
    async with asyncio.timeout(5):
        while len(node.sent) < count:
            await asyncio.sleep(0.01)
    for number in range(1, count + 1):
        sender.on_read_receipt(1, number)


async def offered(node: OfferNode, count: int) -> None:
    async with asyncio.timeout(5):
        while len(node.offers) < count:
            await asyncio.sleep(0.01)


def serve(offers, number: int, size: int, chunk: int = 1000) -> None:
    for position in range(0, size, chunk):
        offers.on_chunk_request(1, number, position, min(chunk, size - position))
    offers.on_chunk_request(1, number, size, 0)


def test_250_only_after_the_receipts_and_every_file_sent():
    async def run():
        node = OfferNode()
        sender, offers = offering(node)
        data = bytes(range(256)) * 10
        task = asyncio.ensure_future(sender.send(1, mail_with(("../cat.jpg", data))))
        await receipts(node, sender, 1)
        await offered(node, 1)
        assert node.offers[0][1:] == (b"cat.jpg", len(data))  # under its own name, without a path
        await asyncio.sleep(0.05)
        assert not task.done()  # the chat user has not taken the file yet
        serve(offers, 0, len(data))
        reply = await task
        assert reply.code == 250 and "1 chat message(s) and 1 file(s)" in reply.text
        assert bytes(node.chunks[0]) == data

    asyncio.run(run())


def test_a_declined_file_is_named_in_a_chat_line_and_the_250_reply():
    async def run():
        node = OfferNode()
        sender, offers = offering(node)
        task = asyncio.ensure_future(sender.send(1, mail_with(("a.pdf", b"a" * 100), ("b.pdf", b"b" * 100))))
        await receipts(node, sender, 1)
        await offered(node, 2)
        serve(offers, 0, 100)
        offers.on_control(1, 1, FILE_CONTROL_CANCEL)  # the chat user said no to b.pdf
        await receipts(node, sender, 2)  # the closing line, confirmed
        reply = await task
        assert reply.code == 250 and "and 1 file(s)" in reply.text
        assert "not taken by the chat user: b.pdf (declined)" in reply.text
        assert b"b.pdf (declined)" in node.sent[-1]

    asyncio.run(run())


def test_a_file_over_the_cap_is_not_offered_and_said():
    async def run():
        node = OfferNode()
        sender, _ = offering(node, max_file=1000)
        task = asyncio.ensure_future(sender.send(1, mail_with(("big.iso", b"x" * 1001))))
        await receipts(node, sender, 2)
        reply = await task
        assert not node.offers
        assert b"big.iso" in node.sent[-1] and b"over the 1000 bytes" in node.sent[-1]
        assert reply.code == 250 and "not offered (too big): big.iso" in reply.text

    asyncio.run(run())


def test_an_offer_nobody_takes_is_withdrawn_and_said():
    async def run():
        node = OfferNode()
        sender, _ = offering(node, accept_wait=0.2)
        task = asyncio.ensure_future(sender.send(1, mail_with(("late.txt", b"zz"))))
        await receipts(node, sender, 1)
        await offered(node, 1)
        await receipts(node, sender, 2)
        reply = await task
        assert reply.code == 250 and "late.txt (not accepted in time)" in reply.text
        assert (0, FILE_CONTROL_CANCEL) in node.controls  # withdrawn

    asyncio.run(run())


def test_the_friend_going_offline_mid_file_defers_the_mail():
    async def run():
        node = OfferNode()
        sender, offers = offering(node)
        task = asyncio.ensure_future(sender.send(1, mail_with(("a.bin", b"a" * 5000))))
        await receipts(node, sender, 1)
        await offered(node, 1)
        offers.on_chunk_request(1, 0, 0, 1000)
        offers.on_friend_offline(1)
        offers.on_control(1, 0, FILE_CONTROL_CANCEL)  # what the node reports after: no "declined"
        reply = await task
        assert reply.code == 451 and reply.text.startswith("4.4.1")

    asyncio.run(run())


def test_a_flood_of_tiny_files_is_capped_like_a_flood_of_messages(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    store = ChatStore(tmp_path / "chat.sqlite")
    settings = ChatSettings(burst_max_messages=3)
    chats = Chats(store, settings, "dora", "d@d", "b", Dovecot().deliver, lambda k, n: (n, "x@tox"))
    for i in range(3):
        assert chats.file_bytes(KEY) == i
        (files / str(i)).write_bytes(b"x")
        store.add_file("dora", KEY, 0.0, "n", f"{i}.txt", files / str(i))
    assert chats.file_bytes(KEY) > 1 << 40  # full: the next offer does not fit


def test_the_burst_waits_for_a_file_on_its_way(tmp_path):
    """The line announcing a file and the file make one mail, however long the file takes."""
    files = tmp_path / "files"
    files.mkdir()

    async def run():
        dovecot = Dovecot()
        chats, _ = make_chats(tmp_path, dovecot, files)
        arriving = [True]
        chats.file_arriving = lambda key: arriving[0]
        chats.on_message(KEY, "n", False, b"a big one is coming")
        await asyncio.sleep(0.5)  # ten burst gaps
        assert not dovecot.mails
        (files / "f").write_bytes(b"big")
        chats.on_file(KEY, "n", "big.bin", files / "f")
        arriving[0] = False
        await settle(dovecot, 1)
        assert b"a big one is coming" in dovecot.mails[0] and b"big.bin" in dovecot.mails[0]

    asyncio.run(run())


def test_files_sent_in_burst_after_burst_are_cut_at_the_day_cap(tmp_path):
    """The per-mail limit lets a friend store max_message_size per burst; by waiting out the gap
    between bursts, unbounded a day (before the day cap: 5 of 5 files kept). Now each file joins
    the day's count when it is kept, and past chat.day_max_file_bytes an offer is refused with a
    chat line that says so."""

    async def run():
        dovecot = Dovecot()
        chat_files, node, _, _, files = make_files(tmp_path)
        chats, store = make_chats(
            tmp_path, dovecot, files, ChatSettings(burst_gap=0.05, day_max_file_bytes=150 * KIB)
        )
        chat_files._done, chat_files._room_used = chats.on_file, chats.file_bytes
        chat_files._day_left = chats.file_day_left
        for number in range(1, 6):
            chat_files.offer(0, number, 60 * KIB, f"photo{number}.jpg".encode())
            if node.controls[-1] == (0, number, FILE_CONTROL_RESUME):
                chat_files.on_chunk(0, number, 0, os.urandom(60 * KIB))
                chat_files.on_chunk(0, number, 60 * KIB, b"")
                await settle(dovecot, number)  # the burst became a mail: the next file starts another
        await chats.stop()
        return dovecot, node, store

    dovecot, node, store = asyncio.run(run())
    assert len(dovecot.mails) == 2  # 2 × 60 KiB kept, the third would pass 150 KiB
    assert [c for c in node.controls if c[2] == FILE_CONTROL_CANCEL] == [
        (0, n, FILE_CONTROL_CANCEL) for n in (3, 4, 5)
    ]
    assert b"all the files this mailbox takes from you today" in node.messages[-1]
    assert store.day_file_bytes("dora", bytes([1]) * 32, time.time()) == 120 * KIB
