"""Mail that leaves by ordinary e-mail (issue 16), with real Postfix, Dovecot and bridges.

Household nora (users nora: ordinary_mail notify, the household's default; ned: allow; nell:
refuse) has household otto as a Tox contact. A third Postfix, `world`, stands for the outside
world: nora's Postfix sends whatever is neither the household's nor over Tox there
(default_transport), and it delivers to its own Dovecot, which the test reads. Mail is submitted
as Thunderbird sends it: the submission port, STARTTLS, a login.

The milter delivers a notice before it answers Postfix at the end of the message, so once the
submission got its 250 a notice is in the INBOX or there is none: the absence of a notice is
checked right after the submission, without waiting.
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import uuid

import pytest

from toxbridge.lab import _fs
from toxbridge.lab.dovecot import Dovecot
from toxbridge.lab.household import Household
from toxbridge.lab.ports import free_port, wait_until
from toxbridge.lab.postfix import Postfix

pytestmark = pytest.mark.integration

ARRIVAL = 90.0  # the first mail to otto waits for the friendship (friend request, accept)
OUTSIDE = 30.0


@pytest.fixture(scope="module")
def homes(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    world_dovecot = Dovecot(lab_root, "world", {"carl": "carl-pw"}, free_port(), free_port(), free_port())
    # No bridge behind the world's Postfix: its transport is the regexp alone (its own domain).
    world = Postfix(
        lab_root,
        "world",
        "world.test",
        free_port(),
        ["carl"],
        world_dovecot.lmtp_port,
        free_port(),
        {"transport_maps": "regexp:$config_directory/transport.regexp"},
    )
    users = {"nora": "nora-pw", "ned": "ned-pw", "nell": "nell-pw"}
    nora = Household(
        lab_root,
        "nora",
        users,
        boot,
        submission=True,
        postfix_extra={"default_transport": f"smtp:[127.0.0.1]:{world.smtp_port}"},
        bridge_settings={
            "users": [
                {"mailbox": "nora", "address": "nora@nora.test"},
                {"mailbox": "ned", "address": "ned@nora.test", "ordinary_mail": "allow"},
                {"mailbox": "nell", "address": "nell@nora.test", "ordinary_mail": "refuse"},
            ]
        },
    )
    otto = Household(lab_root, "otto", {"otto": "otto-pw"}, boot)
    started: list = []
    try:
        for part in (world_dovecot, world, nora, otto):
            part.start()
            started.append(part)
        nora.contacts("add", "Otto", otto.tox_ids["otto"], "otto@otto.test")
        yield {"nora": nora, "otto": otto, "world": world_dovecot}
    finally:
        for part in reversed(started):
            part.stop()


def compose(sender: str, to: list[str], subject: str, extra: str = "") -> tuple[str, str, bytes]:
    """(token, Message-ID, message): the token is in the Subject, the body holds a secret."""
    token = uuid.uuid4().hex[:12]
    mid = f"<{token}@nora.test>"
    text = (
        f"From: {sender}\r\nTo: {', '.join(to)}\r\nSubject: {subject} {token}\r\n"
        f"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\nMessage-ID: {mid}\r\n{extra}\r\n"
        f"The secret body {token} stays out of notices.\r\n"
    )
    return token, mid, text.encode()


def inbox_with(dovecot: Dovecot, user: str, token: str) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(m, policy=email.policy.default)
        for m in dovecot.fetch_inbox(user)
        if token.encode() in m
    ]


def wait_for(dovecot: Dovecot, user: str, token: str, timeout: float) -> email.message.EmailMessage:
    found: list = []

    def arrived() -> bool:
        found[:] = [m for m in inbox_with(dovecot, user, token) if not is_notice(m)]
        return bool(found)

    assert wait_until(arrived, timeout, interval=0.2), f"{token} not in {user}'s INBOX after {timeout}s"
    return found[0]


def is_notice(message: email.message.EmailMessage) -> bool:
    return message.get("Auto-Submitted") == "auto-generated" and "toxbridge" in str(message["From"])


def notices(home: Household, user: str, token: str) -> list[email.message.EmailMessage]:
    return [m for m in inbox_with(home.dovecot, user, token) if is_notice(m)]


def test_mixed_mail_goes_both_ways_and_the_sender_gets_one_notice(homes, report):
    nora, otto, world = homes["nora"], homes["otto"], homes["world"]
    token, mid, message = compose("Nora <nora@nora.test>", ["otto@otto.test", "carl@world.test"], "Plans")
    assert nora.submit("nora", ["otto@otto.test", "carl@world.test"], message) == {}

    (notice,) = notices(nora, "nora", token)  # in the INBOX before the 250 (see above)
    assert notice["From"].addresses[0].addr_spec == "postmaster@nora.test"
    assert notice["To"] == "nora@nora.test"
    assert notice["In-Reply-To"] == mid
    text = notice.get_content()
    ordinary_part, _, tox_part = text.partition("got it over Tox")
    assert "carl@world.test" in ordinary_part and "otto@otto.test" not in ordinary_part
    assert "otto@otto.test" in tox_part and "carl@world.test" not in tox_part
    assert f"Plans {token}" in notice["Subject"] and "Tue, 01 Dec 2026 12:00:00 +0000" in text
    assert "secret body" not in notice.as_string()
    assert "toxbridge contacts add" in text and "toxbridge invite" in text

    outside = wait_for(world, "carl", token, OUTSIDE)
    assert "x-tox" not in str(outside.get("Authentication-Results", ""))
    over_tox = wait_for(otto.dovecot, "otto", token, ARRIVAL)
    assert "x-tox=pass" in str(over_tox["Authentication-Results"])
    assert len(notices(nora, "nora", token)) == 1  # still one: no notice per copy or retry
    assert nora.log_has(r"notice to=<nora>, ordinary=1, over_tox=1, status=sent")
    report(f"mixed mail: notice in nora's INBOX, copies at world and (over Tox) at otto [{token}]")


def test_allow_sends_without_a_notice(homes):
    nora, world = homes["nora"], homes["world"]
    token, _, message = compose("ned@nora.test", ["carl@world.test"], "No notice")
    assert nora.submit("ned", ["carl@world.test"], message) == {}
    assert notices(nora, "ned", token) == []
    wait_for(world, "carl", token, OUTSIDE)
    assert notices(nora, "ned", token) == []


def test_refuse_rejects_the_non_contact_at_rcpt_and_still_sends_the_contacts_copy(homes):
    nora, otto, world = homes["nora"], homes["otto"], homes["world"]
    token, _, message = compose("nell@nora.test", ["otto@otto.test", "carl@world.test"], "Tox only")
    refused = nora.submit("nell", ["otto@otto.test", "carl@world.test"], message)
    assert list(refused) == ["carl@world.test"]
    code, text = refused["carl@world.test"]
    assert code == 550 and text.startswith(b"5.7.1 ") and b"not a Tox contact" in text, refused

    wait_for(otto.dovecot, "otto", token, ARRIVAL)
    assert notices(nora, "nell", token) == []
    assert inbox_with(world, "carl", token) == []
    assert not any("carl@world.test" in str(q) for q in nora.postfix.queue())

    # Only non-contacts: the whole mail is refused, nothing is queued.
    token2, _, message2 = compose("nell@nora.test", ["carl@world.test"], "Tox only")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        nora.submit("nell", ["carl@world.test"], message2)
    assert caught.value.recipients["carl@world.test"][0] == 550


def test_a_user_sending_in_another_users_name_neither_gets_nor_causes_notices(homes):
    """Hostile: the lab's submission, unlike the playbook's, lets a logged-in user pick any
    envelope sender. The milter takes whose mail it is from the login ({auth_authen}): ned in
    nora's name puts no notice into nora's INBOX (nor his own), and nell's refuse holds in
    anyone's name."""
    nora, world = homes["nora"], homes["world"]
    token, _, message = compose("nora@nora.test", ["carl@world.test"], "In her name")
    assert nora.submit("ned", ["carl@world.test"], message, sender="nora@nora.test") == {}
    assert notices(nora, "nora", token) == [] and notices(nora, "ned", token) == []
    wait_for(world, "carl", token, OUTSIDE)

    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        nora.submit("nell", ["carl@world.test"], message, sender="nora@nora.test")
    assert caught.value.recipients["carl@world.test"][0] == 550


@pytest.mark.parametrize(
    ("sender", "extra"),
    [("", ""), ("nora@nora.test", "Auto-Submitted: auto-replied\r\n")],
    ids=["bounce-null-sender", "auto-reply"],
)
def test_bounces_and_auto_replies_get_no_notice(homes, sender, extra):
    nora, world = homes["nora"], homes["world"]
    token, _, message = compose("nora@nora.test", ["carl@world.test"], "Robot", extra)
    assert nora.submit("nora", ["carl@world.test"], message, sender=sender) == {}
    assert notices(nora, "nora", token) == []
    wait_for(world, "carl", token, OUTSIDE)
    assert notices(nora, "nora", token) == []


def test_with_the_milter_unreachable_mail_goes_out_without_a_notice(homes):
    """milter_default_action = accept: a milter that does not answer (here: Postfix pointed at
    a port nobody serves) holds no mail; the mail leaves both ways, only the notice is missing."""
    nora, otto, world = homes["nora"], homes["otto"], homes["world"]
    service = f"{nora.postfix.submission_service}/inet/smtpd_milters"
    nora.postfix._postconf("-P", f"{service}=inet:127.0.0.1:{free_port()}")
    nora.postfix.reload()
    try:
        token, _, message = compose("nora@nora.test", ["carl@world.test", "otto@otto.test"], "No milter")
        assert nora.submit("nora", ["carl@world.test", "otto@otto.test"], message) == {}
        assert notices(nora, "nora", token) == []
        wait_for(world, "carl", token, OUTSIDE)
        wait_for(otto.dovecot, "otto", token, ARRIVAL)
        assert notices(nora, "nora", token) == []
    finally:
        nora.postfix._postconf("-P", f"{service}={nora.postfix.milter}")
        nora.postfix.reload()


def in_queue(home: Household, token: str) -> bool:
    """Is a mail whose Subject holds the token in the household's Postfix queue?"""
    return any(
        token in _fs.run(["postcat", "-c", str(home.postfix.config_dir), "-hq", e["queue_id"]]).stdout
        for e in home.postfix.queue()
    )


def test_with_the_bridge_stopped_ordinary_mail_leaves_and_contacts_mail_waits(homes, report):
    """Issue 16 item 4, design decision 12: `toxbridge run` (Tox, LMTP) stopped, `toxbridge
    routes` (socketmap, milter) running. A mail to a contact and a non-contact at once: the
    non-contact's copy leaves by the ordinary route with its notice; the contact's copy waits in
    Postfix's queue (its LMTP socket is gone) and crosses Tox once `run` is back, exactly once."""
    nora, otto, world = homes["nora"], homes["otto"], homes["world"]
    token, _, message = compose("nora@nora.test", ["carl@world.test", "otto@otto.test"], "Bridge down")
    nora.stop_bridge()
    try:
        assert nora.submit("nora", ["carl@world.test", "otto@otto.test"], message) == {}
        (notice,) = notices(nora, "nora", token)  # the milter answered without `run`
        ordinary_part, _, tox_part = notice.get_content().partition("got it over Tox")
        assert "carl@world.test" in ordinary_part and "otto@otto.test" in tox_part
        wait_for(world, "carl", token, OUTSIDE)
        assert wait_until(
            lambda: (
                re.search(
                    r"to=<otto@otto.test>, relay=.*status=deferred",
                    nora.postfix.maillog.read_text(),
                )
                is not None
            ),
            OUTSIDE,
            interval=0.2,
        ), _fs.tail(nora.postfix.maillog)
        assert in_queue(nora, token) and inbox_with(otto.dovecot, "otto", token) == []
    finally:
        nora.start_bridge()
    # The catch-up pushes the deferred copy once otto is online again.
    wait_for(otto.dovecot, "otto", token, ARRIVAL)
    nora.postfix.wait_queue_empty(ARRIVAL)
    assert len(inbox_with(otto.dovecot, "otto", token)) == 1
    assert len(inbox_with(world, "carl", token)) == 1 and len(notices(nora, "nora", token)) == 1
    report(f"run stopped: ordinary copy and notice at once, the contact's copy after the restart [{token}]")


def test_with_routes_stopped_postfix_fails_closed_and_nothing_leaks(homes):
    """`toxbridge routes` stopped: Postfix cannot ask where an address goes, so every address
    that is neither the household's nor @tox gets 451 4.3.0 at RCPT, the contact's too: nothing
    slips out by the ordinary route, nothing is queued. The household's own mail still flows."""
    nora, world = homes["nora"], homes["world"]
    token, _, message = compose("nora@nora.test", ["carl@world.test", "otto@otto.test"], "Routes down")
    nora.stop_routes()
    # Fresh smtpd processes: each keeps the answers it got (the test above just asked for these).
    nora.postfix.reload()
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            nora.submit("nora", ["carl@world.test", "otto@otto.test"], message)
        refused = caught.value.recipients
        assert {r: c for r, (c, _) in refused.items()} == {"carl@world.test": 451, "otto@otto.test": 451}
        assert all(text.startswith(b"4.3.0 ") for _, text in refused.values())
        assert not in_queue(nora, token)
        own, _, own_message = compose("nora@nora.test", ["ned@nora.test"], "Routes down, at home")
        assert nora.submit("nora", ["ned@nora.test"], own_message) == {}
        wait_for(nora.dovecot, "ned", own, OUTSIDE)
    finally:
        nora.start_routes()
    assert inbox_with(world, "carl", token) == []
    # Each smtpd process keeps the failed lookup until it exits (up to max_idle, 100 s, after its
    # last client; tests/test_socketmap.py): a reload gives fresh ones.
    nora.postfix.reload()
    assert nora.submit("nora", ["carl@world.test", "otto@otto.test"], message) == {}
    assert len(notices(nora, "nora", token)) == 1
    wait_for(world, "carl", token, OUTSIDE)
