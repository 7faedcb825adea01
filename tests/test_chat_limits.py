"""Chat-app friends at the limits (issue 17), in a household of its own with real Postfix.

A mail to a chat-app friend that stays offline bounces in words a person understands: Postfix
puts the last deferral's text into the bounce, and for a friend on a plain Tox chat app it says
that the recipient uses a chat app (not a mail bridge), has been offline, and that the mail was
tried again (a queue lifetime of 0: one try, then the bounce). A friend that waits out the burst
gap between floods is cut at the day's cap. The friends are plain clients (tests/toxpeer.py).
"""

from __future__ import annotations

import email
import email.policy
import json

import pytest
from toxpeer import PlainClient, befriend

from toxbridge.lab.household import Household
from toxbridge.lab.ports import wait_until

pytestmark = pytest.mark.integration

BURST, DAY = 10, 25  # chat.burst_max_messages, chat.day_max_messages


@pytest.fixture(scope="module")
def home(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    house = Household(
        lab_root,
        "nan",
        {"nan": "nan-pw"},
        boot,
        # One try, then the bounce (Postfix: 0 = deliver once); the same for bounces themselves.
        postfix_extra={"maximal_queue_lifetime": "0", "bounce_queue_lifetime": "0"},
        bridge_settings={"chat": {"burst_gap": 1.0, "burst_max_messages": BURST, "day_max_messages": DAY}},
    )
    try:
        house.start()
        yield house
    finally:
        house.stop()


def test_mail_to_an_offline_chat_app_bounces_saying_so(home, bootstrap_node):
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, home, "nan")
        key = client.node.public_key.hex()
        client.call(client.node.send_message, friend, b"hi nan, I am on my phone")
        home.wait_log(f"nan: friend {key[:8]} is a chat app", 60)
        home.wait_log(r"chat \w+: to=<nan@nan.test>, .*status=sent", 60)  # its chat, as mail
    finally:
        client.close()
    home.wait_log(f"nan: friend {key[:8]} went offline", 60)
    before = len(home.dovecot.fetch_inbox("nan"))
    home.postfix.send(home.address("nan"), [f"{key}@tox"], b"Subject: are you there\r\n\r\nplease call\r\n")
    box = home.wait_inbox("nan", before + 1, 60)
    bounces = [
        m
        for m in (email.message_from_bytes(raw, policy=email.policy.default) for raw in box)
        if "MAILER-DAEMON" in str(m["From"])
    ]
    assert len(bounces) == 1, [str(m["From"]) for m in bounces]
    text = bounces[0].as_string()
    unfolded = " ".join(text.split())
    assert f"{key}@tox" in unfolded
    assert (
        f"Tox friend {key[:8]} uses a Tox chat app (not a mail bridge) and has been offline since" in unfolded
    )
    assert "the mail will be tried again" in unfolded
    assert "Postfix will retry" not in unfolded


def test_floods_that_wait_out_the_gap_are_cut_at_the_day_cap(home, bootstrap_node):
    """Hostile: bursts of BURST messages, each after the last one's mail went out (the per-burst
    cap never bites); the day's cap keeps DAY of them, the friend is told once, the bridge logs
    it once, and `toxbridge status` counts what was dropped."""
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, home, "nan")
        key = client.node.public_key.hex()
        mark = home.log_mark()
        before = len(home.dovecot.fetch_inbox("nan"))
        sent = 0
        for burst in range(6):
            burst_mark = home.log_mark()
            for i in range(BURST):
                client.call(client.node.send_message, friend, f"flood {burst} {i}".encode())
                sent += 1
            if burst < 3:  # the first two and a half bursts fit into the day
                home.wait_log(
                    rf"chat \w+: to=<nan@nan.test>, peer={key[:8]}, .*status=sent", 60, since=burst_mark
                )
        assert wait_until(lambda: any(b"daily limit" in m for m in client.messages), 60), client.messages
        home.wait_log(f"nan: friend {key[:8]} reached today's chat limit", 10, since=mark)

        def dropped() -> int:
            checks = json.loads(home.toxbridge("status", "--json").stdout)["checks"]
            cut = [
                c["text"]
                for c in checks
                if f"({key[:8]}) (a Tox chat app) reached today's chat limit" in c["text"]
            ]
            return int(cut[0].rsplit(": ", 1)[1].split()[0]) if cut else 0

        assert wait_until(lambda: dropped() == sent - DAY, 60), dropped()
        chat_mails = [m for m in home.dovecot.fetch_inbox("nan")[before:] if b"flood " in m]
        assert sum(m.count(b"] flood ") for m in chat_mails) == DAY
        log = home.bridge_log.read_text(errors="replace")
        assert log.count(f"friend {key[:8]} reached today's chat limit") == 1
        assert sum(b"daily limit" in m for m in client.messages) == 1
    finally:
        client.close()
