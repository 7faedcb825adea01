"""Bridge or chat app: a friend that greeted as a bridge is never taken for a chat app (issue 17).

Mail to a bridge taken for a chat app would go as chat messages that the bridge ignores while
its toxcore sends their read receipts: Postfix would hear 250 and the mail would be lost. So a
key that greeted as a bridge, in this run or an earlier one, stays a bridge whatever it does
(chat messages, avatars, a slow greeting): those are noise, logged once, and its mail keeps
going by file transfer with the envelope. The friend is a plain client (tests/toxpeer.py) that
greets as a bridge when the test says so and never answers a mail.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest
from payloads import decode_payload
from toxpeer import PlainClient, befriend

from toxbridge.lab.household import Household
from toxbridge.lab.ports import wait_until
from toxbridge.tox import wire
from toxbridge.tox.identity import GREETING_WAIT
from toxbridge.tox.library import FILE_KIND_AVATAR

pytestmark = pytest.mark.integration

WAIT = 60.0


@pytest.fixture(scope="module")
def home(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    house = Household(lab_root, "kin", {"kin": "kin-pw"}, boot, bridge_settings={"chat": {"burst_gap": 2.0}})
    try:
        house.start()
        yield house
    finally:
        house.stop()


def drop_queued(home: Household, client: PlainClient) -> None:
    """Remove the mail kin queued for the peer (it never answers)."""
    key = client.node.public_key.hex()
    for entry in home.postfix.queue():
        if any(key in r.get("address", "") for r in entry.get("recipients", [])):
            subprocess.run(
                ["postsuper", "-c", str(home.postfix.config_dir), "-d", entry["queue_id"]],
                check=False,
                capture_output=True,
            )


@pytest.fixture
def peer(home, bootstrap_node):
    """A plain client befriended by kin, greeting as a bridge on every connection."""
    client = PlainClient(bootstrap_node, greet=True)
    try:
        yield client, befriend(client, home, "kin")
    finally:
        client.close()
        drop_queued(home, client)


def mail_goes_by_file(home: Household, client: PlainClient) -> None:
    """A mail from kin to the peer arrives as a mail transfer: the envelope, then the message."""
    key = client.node.public_key.hex()
    token = uuid.uuid4().hex
    seen = len(client.complete)
    home.postfix.send(home.address("kin"), [f"{key}@tox"], f"Subject: {token}\r\n\r\nhello\r\n".encode())
    assert wait_until(
        lambda: any(token.encode() in p for p in [*client.complete[seen:], *client.messages]), WAIT
    )
    assert not any(token.encode() in m for m in client.messages), "the mail went as chat"
    payload = next(p for p in client.complete[seen:] if token.encode() in p)
    envelope, message = decode_payload(payload, 1 << 20)
    assert envelope.sender == home.address("kin") and envelope.recipients == (f"{key}@tox",)
    assert f"Subject: {token}\r\n".encode() in message


def chat_and_avatar(client: PlainClient, friend: int) -> None:
    """What a chat app does on connecting: a chat message and an avatar offer."""
    client.call(client.node.send_message, friend, b"hello from a chat app, honest")
    client.send_file(friend, b"\x89PNG" + b"\0" * 100, kind=FILE_KIND_AVATAR, filename=b"avatar.png")


def test_a_bridge_that_chats_and_offers_an_avatar_in_this_run_stays_a_bridge(home, peer):
    client, friend = peer
    key = client.node.public_key.hex()
    home.wait_log(f"kin: friend {key[:8]} is a bridge", WAIT)
    mark = home.log_mark()
    chat_and_avatar(client, friend)
    home.wait_log(
        f"friend {key[:8]} greeted as a bridge before; now it sent a chat message", WAIT, since=mark
    )
    mail_goes_by_file(home, client)
    assert not home.log_has(f"friend {key[:8]} is a chat app", since=mark)
    before = len(home.dovecot.fetch_inbox("kin"))
    assert not home.log_has(r"chat \w+: to=<kin@kin.test>", since=mark)  # its chat is not stored as mail
    assert len(home.dovecot.fetch_inbox("kin")) == before


def test_a_bridge_that_greeted_in_an_earlier_run_and_is_now_slow_is_not_downgraded(home, peer):
    """After a restart of kin's bridge the peer no longer greets at once: it chats, offers an
    avatar and stays silent past GREETING_WAIT. Its mail still goes by file transfer."""
    client, friend = peer
    key = client.node.public_key.hex()
    home.wait_log(f"kin: friend {key[:8]} is a bridge", WAIT)
    client.greet = False  # slow from now on
    mark = home.log_mark()
    home.stop_bridge()
    home.start_bridge()
    home.wait_log(f"kin: friend {key[:8]} online", 120, since=mark)
    chat_and_avatar(client, friend)
    mail_goes_by_file(home, client)
    home.wait_log(f"friend {key[:8]} greeted as a bridge before; now it", WAIT, since=mark)
    home.wait_log(
        f"kin: friend {key[:8]} \\(a bridge\\) has not greeted in {GREETING_WAIT:.0f} s online; still a bridge",
        GREETING_WAIT + 30,
        since=mark,
    )
    mail_goes_by_file(home, client)  # past GREETING_WAIT without a greeting: still by file
    assert not home.log_has(f"kin: friend {key[:8]} is a chat app", since=mark)
    client.send_packet(friend, wire.encode_greeting("toxbridge 0.0.9"))  # greets at last
    home.wait_log(f"kin: friend {key[:8]} is a bridge", WAIT, since=mark)


def test_a_friend_that_greets_after_the_wait_is_a_bridge_from_then_on(home, bootstrap_node):
    """A new friend silent past GREETING_WAIT is taken for a chat app; its late greeting makes it
    a bridge, and a chat message after that does not make it a chat app again."""
    client = PlainClient(bootstrap_node, greet=False)
    try:
        mark = home.log_mark()
        friend = befriend(client, home, "kin")
        key = client.node.public_key.hex()
        home.wait_log(
            f"kin: friend {key[:8]} is a chat app, not a bridge \\(no greeting",
            GREETING_WAIT + 30,
            since=mark,
        )
        client.send_packet(friend, wire.encode_greeting("toxbridge 0.0.9"))
        home.wait_log(f"kin: friend {key[:8]} is a bridge", WAIT, since=mark)
        mark = home.log_mark()
        client.call(client.node.send_message, friend, b"a bridge that chats")
        home.wait_log(
            f"friend {key[:8]} greeted as a bridge before; now it sent a chat message", WAIT, since=mark
        )
        mail_goes_by_file(home, client)
        assert not home.log_has(f"kin: friend {key[:8]} is a chat app", since=mark)
    finally:
        client.close()
        drop_queued(home, client)
