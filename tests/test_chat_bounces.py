"""A mail to a chat-app friend that stays offline bounces in words a person understands (issue 17).

Postfix puts the last deferral's text into the bounce: for a friend on a plain Tox chat app it
says that the recipient uses a chat app (not a mail bridge), has been offline, and that the mail
was tried again. Real Postfix with a queue lifetime of 0 (one try, then the bounce) in a
household of its own; the friend is a plain client (tests/toxpeer.py) that chatted, then quit.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from toxpeer import PlainClient, befriend

from toxbridge.lab.household import Household

pytestmark = pytest.mark.integration


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
        bridge_settings={"chat": {"burst_gap": 1.0}},
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
