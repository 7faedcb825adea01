"""Friends who use a plain Tox chat app: the real `toxic` client (tests/toxic.py) befriends a
household's bridge, and what it types arrives in the user's IMAP INBOX as mail: one mail per
burst, threaded per friend, `/me` kept, on disk before toxcore's callback returns (a kill -9
loses nothing). A flood from a plain client is capped per burst."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import sqlite3

import pytest
from toxic import Toxic
from toxpeer import PlainClient, befriend

from toxbridge.lab.household import Household
from toxbridge.lab.ports import wait_until

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
GAP = 3.0  # seconds without a message that end a burst (chat.burst_gap)
MAX_MESSAGES = 40


@pytest.fixture(scope="module")
def home(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    house = Household(
        lab_root,
        "gran",
        {"gran": "gran-pw"},
        boot,
        bridge_settings={"chat": {"burst_gap": GAP, "burst_max_messages": MAX_MESSAGES}},
    )
    try:
        house.start()
        yield house
    finally:
        house.stop()


@pytest.fixture(scope="module")
def toxic(lab_root, bootstrap_node, home):
    """toxic, a friend of gran's bridge (toxic asked; the bridge accepts requests), in its chat window."""
    client = Toxic(lab_root / "toxic", bootstrap_node)
    try:
        client.start()
        client.wait_screen(r"\[(Online|Away|Busy)\]", 60)
        mark = home.log_mark()
        client.add_friend(home.tox_ids["gran"])
        key = client.public_key.hex()
        home.wait_log(f"gran: accepted friend request from {key}", 90, since=mark)
        home.wait_log(f"gran: friend {key[:8]} online", 90, since=mark)
        client.wait_screen("has come online", 60)
        client.open_chat()
        yield client
    finally:
        client.close()


def text_of(mail) -> str:
    """The mail's text/plain body."""
    part = mail.get_body(("plain",))
    assert part is not None, mail
    return part.get_content()


def mails(home: Household, count: int, timeout: float = 60) -> list[email.message.EmailMessage]:
    raw = home.wait_inbox("gran", count, timeout)
    return [email.message_from_bytes(m, policy=email.policy.default) for m in raw]


def stored(home: Household) -> list[bytes]:
    """The chat messages gran's bridge holds on disk, not yet delivered."""
    with sqlite3.connect(home.root / "state" / "chat.sqlite") as db:
        return [row[0] for row in db.execute("SELECT text FROM chat_messages ORDER BY id")]


def chat_rows(home: Household) -> int:
    return len(stored(home))


def test_the_bridge_tells_chat_apps_where_their_messages_go(toxic):
    """The status message toxic shows for the bridge (item 4 of issue 17)."""
    toxic.wait_screen(r"chat messages become e-mail to gran@gran\.test", 30)


def test_a_burst_arrives_as_one_mail_from_the_friend(home, toxic):
    before = len(home.dovecot.fetch_inbox("gran"))
    mark = home.log_mark()
    toxic.command("hello grandma")
    toxic.command("/me waves")
    toxic.command("are you there?")
    toxic.wait_screen("are you there")
    home.wait_log(r"chat \w+: to=<gran@gran.test>, peer=\w+, messages=3, .*status=sent", 60, since=mark)
    mail = mails(home, before + 1)[-1]
    key = toxic.public_key.hex()
    assert mail["From"].addresses[0].addr_spec == f"{key}@tox"
    assert mail["From"].addresses[0].display_name == "toxic-friend"
    assert f"x-tox.key={key}" in " ".join(mail.get_all("Authentication-Results") or [])
    assert "x-tox=pass" in mail["Authentication-Results"]
    text = text_of(mail)
    lines = [line.split("] ", 1)[1] for line in text.splitlines() if line]
    assert lines == ["hello grandma", "* toxic-friend waves", "are you there?"]
    assert len(home.dovecot.fetch_inbox("gran")) == before + 1  # one mail, not one per message

    # The next burst answers the first: one thread per friend.
    mark = home.log_mark()
    toxic.command("second burst")
    home.wait_log(r"chat \w+: .*messages=1, .*status=sent", 60, since=mark)
    second = mails(home, before + 2)[-1]
    assert second["In-Reply-To"] == mail["Message-ID"]
    assert mail["Message-ID"] in second["References"]
    assert "second burst" in text_of(second)


def test_an_open_burst_survives_kill_9(home, toxic):
    before = len(home.dovecot.fetch_inbox("gran"))
    toxic.command("written before the kill")
    assert wait_until(lambda: chat_rows(home) == 1, 30)  # on disk, the burst still open
    home.stop_bridge(signal.SIGKILL)
    assert len(home.dovecot.fetch_inbox("gran")) == before
    mark = home.log_mark()
    home.start_bridge()
    home.wait_log(r"chat \w+: .*messages=1, .*status=sent", 60, since=mark)
    mail = mails(home, before + 1)[-1]
    assert "written before the kill" in text_of(mail)
    assert chat_rows(home) == 0
    key = toxic.public_key.hex()
    home.wait_log(f"gran: friend {key[:8]} online", 120, since=mark)  # back for the next test


def test_a_burst_is_delivered_at_shutdown(home, toxic):
    before = len(home.dovecot.fetch_inbox("gran"))
    toxic.command("just before the stop")
    # (toxic may send the message before the kill again too: its read receipt may not have left)
    assert wait_until(lambda: b"just before the stop" in stored(home), 60)
    mark = home.log_mark()
    home.stop_bridge(signal.SIGTERM)
    assert home.log_has(r"chat \w+: .*status=sent", since=mark)
    mail = mails(home, before + 1, 5)[-1]
    assert "just before the stop" in text_of(mail)
    home.start_bridge()
    home.wait_log(f"gran: friend {toxic.public_key.hex()[:8]} online", 120, since=mark)


def test_a_flood_is_capped_per_burst(home, bootstrap_node):
    """A hostile plain client sends 2000 messages at once: the household keeps MAX_MESSAGES of
    them (never more on disk), delivers them as one mail that says how many it left out."""
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, home, "gran")
        before = len(home.dovecot.fetch_inbox("gran"))
        mark = home.log_mark()
        peak = 0
        for i in range(2000):
            while True:
                try:
                    client.call(client.node.send_message, friend, f"flood {i:04d} ".encode() * 20)
                    break
                except Exception:  # toxcore's send queue is full: let it drain
                    peak = max(peak, chat_rows(home))
        home.wait_log(r"chat \w+: .*messages=40, .*status=sent", 120, since=mark)
        assert home.log_has("sends more than one mail holds", since=mark)
        mail = mails(home, before + 1)[-1]
        text = text_of(mail)
        assert text.count("flood ") == MAX_MESSAGES * 20
        dropped = int(text.split("(", 1)[1].split()[0])
        assert dropped > 0
        assert max(peak, chat_rows(home)) <= MAX_MESSAGES
    finally:
        client.close()


def maillog_has(home: Household, pattern: str) -> bool:
    return re.search(pattern, home.postfix.maillog.read_text(errors="replace")) is not None


LONG = " ".join(f"word{i:04d}" for i in range(400))  # about 3.6 KB: three chat messages


def test_mail_to_a_chat_app_arrives_as_chat_messages(home, toxic):
    """Subject and text body as chat; quoted reply trimmed; long text split on word boundaries;
    Postfix is told `sent` only once toxic's client confirmed every message (read receipts)."""
    key = toxic.public_key.hex()
    home.wait_log(f"friend {key[:8]} is a chat app", 60)  # it chatted, or never greeted
    mark = home.log_mark()
    home.postfix.send(
        home.address("gran"),
        [f"{key}@tox"],
        (
            "From: Gran <gran@gran.test>\r\nTo: grandson\r\nSubject: Dinner on Sunday\r\n"
            "Message-ID: <dinner-1@gran.test>\r\n\r\n"
            f"Come at six.\r\n{LONG}\r\nthe end\r\n\r\nOn Monday grandson wrote:\r\n> quoted old line\r\n"
        ).encode(),
    )
    home.wait_log(rf"to=<{key}@tox>, .*status=sent \(250 2\.0\.0 delivered as 4 chat message", 60, since=mark)
    assert wait_until(lambda: maillog_has(home, rf"to=<{key}@tox>.*status=sent"), 30)
    seen = toxic.wait_seen("the end", 10)  # the receipts came: toxic has shown every message
    assert "Mail from Gran <gran@gran.test>: Dinner on Sunday" in seen
    assert "Come at six." in seen and "quoted old line" not in seen and "wrote:" not in seen
    first = re.findall(r"word\d{4}", toxic.chatlog())  # the first message, flushed by the next
    assert first and first == [f"word{i:04d}" for i in range(len(first))]  # cut between words


def test_a_reply_in_toxic_threads_under_the_mail_it_answers(home, toxic):
    before = len(home.dovecot.fetch_inbox("gran"))
    mark = home.log_mark()
    toxic.open_chat()
    toxic.command("yes, I will come at six")
    # (toxic may add a line it sends again: one whose receipt a restarted bridge never sent)
    home.wait_log(r"chat \w+: .*status=sent", 60, since=mark)
    reply = mails(home, before + 1)[-1]
    assert reply["In-Reply-To"] == "<dinner-1@gran.test>"
    assert "<dinner-1@gran.test>" in reply["References"]
    assert "yes, I will come at six" in text_of(reply)


def test_mail_to_an_offline_chat_app_waits_and_arrives_once(home, toxic):
    key = toxic.public_key.hex()
    mark = home.log_mark()
    toxic.stop()
    home.wait_log(f"gran: friend {key[:8]} went offline", 60, since=mark)
    home.postfix.send(
        home.address("gran"), [f"{key}@tox"], b"Subject: while you were away\r\n\r\nback soon?\r\n"
    )

    def deferred() -> bool:
        return any(
            "offline" in r.get("delay_reason", "")
            for q in home.postfix.queue()
            for r in q.get("recipients", [])
        )

    assert wait_until(deferred, 60), home.postfix.queue()
    assert "back soon?" not in toxic.seen()
    toxic.start()
    home.wait_log(rf"to=<{key}@tox>, .*status=sent", 120, since=mark)
    assert wait_until(lambda: not home.postfix.queue(), 30)
    toxic.open_chat()
    seen = toxic.wait_seen("back soon", 30)
    assert toxic.screen().count("back soon?") == 1, seen  # once, though Postfix tried twice


def attachments(mail) -> list[tuple[str, str, bytes]]:
    """(file name, content type, bytes) of each attachment."""
    return [(p.get_filename(), p.get_content_type(), p.get_content()) for p in mail.iter_attachments()]


def test_a_file_sent_with_toxic_arrives_as_an_attachment_in_the_friends_thread(home, toxic):
    """toxic's `/sendfile`: the file joins the friend's open burst (the line typed before it),
    and the burst's mail carries it under its own name, with its type guessed from the name
    and exactly its bytes; the mail threads under the friend's mail before."""
    before = len(home.dovecot.fetch_inbox("gran"))
    toxic.open_chat()
    mark = home.log_mark()
    toxic.command("a photo is coming")
    home.wait_log(r"chat \w+: .*status=sent", 60, since=mark)
    earlier = mails(home, before + 1)[-1]
    photo = toxic.root / "holiday-photo.jpg"
    data = os.urandom(300 * 1024)
    photo.write_bytes(data)
    mark = home.log_mark()
    toxic.command("here it is")
    toxic.command(f"/sendfile {photo}")
    home.wait_log(r"chat \w+: .*messages=1, files=1, .*status=sent", 90, since=mark)
    mail = mails(home, before + 2)[-1]
    assert attachments(mail) == [("holiday-photo.jpg", "image/jpeg", data)]
    text = text_of(mail)
    assert "here it is" in text and "(sent the file holiday-photo.jpg: attached)" in text
    assert mail["In-Reply-To"] == earlier["Message-ID"]
    assert not list((home.root / "state" / "chat-files" / "gran").iterdir())  # delivered: gone


def test_a_file_over_the_size_limit_is_refused_with_a_chat_line_saying_the_limit(home, bootstrap_node):
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, home, "gran")
        limit = 50 * 1024 * 1024  # max_message_size's default
        number = client.send_file(friend, b"x", os.urandom(32), filename=b"film.mkv", size=limit + 1)
        assert wait_until(lambda: number in client.cancelled, 30)
        assert wait_until(lambda: any(b"too big" in m for m in client.messages), 30)
        told = [m for m in client.messages if b"too big" in m][0]
        assert b"film.mkv" in told and b"50 MiB" in told
    finally:
        client.close()


def test_a_file_interrupted_by_kill_9_is_resumed_never_half_delivered(home, bootstrap_node):
    """The bridge is killed in the middle of a chat app's file: no mail with half of it; the
    same offer after the restart resumes from the partial file and the whole file arrives once.
    The name the chat app chose is kept without its path (no `../`)."""
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, home, "gran")
        key = client.node.public_key.hex()
        partial = home.root / "state" / "partial" / "gran"
        data, file_id = os.urandom(3 * MIB), os.urandom(32)
        name = b"../../etc/big report.pdf"
        client.send_file(friend, data, file_id, filename=name, serve=2 * MIB)

        def partial_size() -> int:
            found = list(partial.glob(f"{key}-{file_id.hex()}"))
            return found[0].stat().st_size if found else 0

        # (the partial file is written through a 1 MiB buffer: what a kill leaves is on disk)
        assert wait_until(lambda: partial_size() >= MIB, 60)
        before = len(home.dovecot.fetch_inbox("gran"))
        home.stop_bridge(signal.SIGKILL)
        mark = home.log_mark()
        home.start_bridge()
        home.wait_log(f"gran: friend {key[:8]} online", 120, since=mark)
        assert wait_until(lambda: client.call(client.node.friend_connection, friend) != 0, 60)
        client.send_file(friend, data, file_id, filename=name)
        home.wait_log(rf"sends a file of {3 * MIB} bytes, resumed at byte [1-9]\d+", 60, since=mark)
        home.wait_log(rf"chat \w+: .*peer={key[:8]}, messages=0, files=1, .*status=sent", 60, since=mark)
        mail = mails(home, before + 1)[-1]
        assert attachments(mail) == [("big report.pdf", "application/pdf", data)]
        assert len(home.dovecot.fetch_inbox("gran")) == before + 1
        assert partial_size() == 0
    finally:
        client.close()


def sent_lines(home: Household, key: str) -> list[str]:
    """Postfix's status=sent lines for mail to the chat friend."""
    text = home.postfix.maillog.read_text(errors="replace")
    return [line for line in text.splitlines() if f"to=<{key}@tox>" in line and "status=sent" in line]


def test_attachments_reach_toxic_as_files_and_postfix_hears_sent_only_after(home, toxic):
    """A mail with a text and two attachments: toxic gets the text as messages, then two file
    offers under the attachments' names. Postfix has no `sent` while the files wait for the
    chat user; toxic takes one (`/savefile`), whose bytes land in its download directory, and
    declines the other (`/cancel in`): then `sent`, with the declined file named in the reply."""
    from email.message import EmailMessage

    key = toxic.public_key.hex()
    photo, notes = os.urandom(200 * 1024), b"%PDF-1.4 notes\n" * 100
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "Gran <gran@gran.test>", f"{key}@tox", "Garden photos"
    mail.set_content("The roses are out. Photos attached.")
    mail.add_attachment(photo, maintype="image", subtype="jpeg", filename="garden.jpg")
    mail.add_attachment(notes, maintype="application", subtype="pdf", filename="notes.pdf")
    toxic.open_chat()
    already = len(sent_lines(home, key))
    mark = home.log_mark()
    home.postfix.send(home.address("gran"), [f"{key}@tox"], mail.as_bytes())
    screen = toxic.wait_screen(r"/savefile \d+(.|\n)*/savefile \d+", 120)
    assert "The roses are out" in toxic.seen()
    assert len(sent_lines(home, key)) == already  # the files are not taken yet: no `sent`
    offers = dict(re.findall(r"'(garden\.jpg|notes\.pdf)'.*?/savefile (\d+)", screen, re.S))
    assert set(offers) == {"garden.jpg", "notes.pdf"}, screen
    toxic.command(f"/savefile {offers['garden.jpg']}")
    toxic.command(f"/cancel in {offers['notes.pdf']}")
    home.wait_log(
        rf"to=<{key}@tox>, .*status=sent \(250 2\.0\.0 delivered as \d+ chat message\(s\) and 1 file\(s\)"
        r".*notes\.pdf \(declined\)",
        120,
        since=mark,
    )
    assert (toxic.downloads / "garden.jpg").read_bytes() == photo
    assert not (toxic.downloads / "notes.pdf").exists()
    assert wait_until(lambda: len(sent_lines(home, key)) == already + 1, 30)
    assert "notes.pdf (declined)" in sent_lines(home, key)[-1]
    toxic.wait_seen(r"not taken: notes\.pdf \(declined\)", 30)


def test_the_first_mail_to_a_new_toxic_goes_as_chat_on_its_first_try(home, lab_root, bootstrap_node):
    """gran writes to the full Tox ID of someone she never wrote to: the bridge sends the friend
    request and Postfix keeps the mail (4.4.1). toxic accepts; its kind is not known yet, so the
    mail waits at DATA for a greeting or a chat-app sign and goes as chat on that first try after
    toxic came online: no transfer offered, nothing stalled (issue 17 item 6)."""
    newcomer = Toxic(lab_root / "toxic-new", bootstrap_node, name="newcomer")
    try:
        newcomer.start()
        newcomer.wait_screen(r"\[(Online|Away|Busy)\]", 60)
        address = f"{newcomer.tox_id.lower()}@tox"
        key = newcomer.public_key.hex()
        mark = home.log_mark()
        home.postfix.send(home.address("gran"), [address], b"Subject: welcome\r\n\r\nfirst words\r\n")
        home.wait_log(f"gran: sent a friend request to {key[:8]}", 60, since=mark)
        assert wait_until(
            lambda: maillog_has(home, rf"to=<{address}>.*status=deferred.*friend request sent"), 30
        )
        newcomer.accept_request()
        home.wait_log(f"gran: friend {key[:8]} online", 90, since=mark)
        home.wait_log(
            rf"to=<{address}>, .*status=sent \(250 2\.0\.0 delivered as \d+ chat message", 90, since=mark
        )
        assert wait_until(lambda: maillog_has(home, rf"to=<{address}>.*status=sent"), 30)
        newcomer.open_chat()
        newcomer.wait_seen("first words", 30)
        log = home.postfix.maillog.read_text(errors="replace")
        tries = [line for line in log.splitlines() if f"to=<{address}>" in line]
        outcomes = [re.search(r"status=(\w+)", t).group(1) for t in tries]  # type: ignore[union-attr]
        assert outcomes == ["deferred", "sent"], tries  # the friend request's wait, then the first try
        assert "friend request sent" in tries[0]
        assert "stalled" not in log
        assert not home.log_has(rf"to=<{address}>, .*status=deferred", since=mark)
        assert not any(newcomer.downloads.iterdir())  # no file was offered and taken
    finally:
        newcomer.close()
