"""Contacts with real Postfix, Dovecot and bridges: ordinary addresses over Tox, replies that stay
on Tox, senders bound to keys, friend requests that follow the contacts book or wait for a yes."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import subprocess
import time
import uuid

import pytest
from toxpeer import PlainClient, befriend, befriended_by_mail

from toxbridge.config import load
from toxbridge.lab import _fs
from toxbridge.lab.household import Household
from toxbridge.lab.ports import wait_until
from toxbridge.ops import control

pytestmark = pytest.mark.integration

ARRIVAL = 60.0
ROUTING = 10.0  # the bridge rereads the contacts file every second


def lookup(home, key: str) -> str | None:
    """`postmap -q KEY` against the household bridge's socketmap, as Postfix asks it."""
    done = _fs.run(
        [
            "postmap",
            "-c",
            str(home.postfix.config_dir),
            "-q",
            key,
            f"socketmap:{home.socketmap}:transport",
        ]
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.strip() if done.returncode == 0 else None


def compose(sender: str, to: str, subject: str, headers: str = "") -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4()}@test>"
    text = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n{headers}\r\nHello.\r\n"
    return mid, text.encode()


def arrived(home, user: str, mid: str, timeout: float = ARRIVAL) -> email.message.EmailMessage:
    found: list[bytes] = []

    def check() -> bool:
        found[:] = [m for m in home.dovecot.fetch_inbox(user) if mid.encode() in m]
        return bool(found)

    assert wait_until(check, timeout, interval=0.2), f"{mid} not in {home.name}/{user} after {timeout}s"
    return email.message_from_bytes(found[0], policy=email.policy.default)


def delivered(home, user: str, mid: str) -> bool:
    return any(
        mid.encode() in m and b"X-Toxbridge-Id" in m.split(b"\r\n\r\n")[0]
        for m in home.dovecot.fetch_inbox(user)
    )


def bounce_for(home, user: str, mid: str, timeout: float = ARRIVAL) -> str:
    """The text of the bounce Postfix sent `user` for the mail `mid`."""
    found: list[bytes] = []

    def check() -> bool:
        found[:] = [
            m
            for m in home.dovecot.fetch_inbox(user)
            if mid.encode() in m and b"MAILER-DAEMON" in m.split(b"\r\n\r\n")[0]
        ]
        return bool(found)

    assert wait_until(check, timeout, interval=0.2), f"no bounce for {mid} in {home.name}/{user}"
    return found[0].decode("utf-8", "replace")


def received(message) -> str:
    return " ".join(str(r) for r in message.get_all("Received", []))


def key(home, user: str) -> str:
    return home.tox_ids[user][:64].lower()


def test_contact_address_crosses_tox_and_the_reply_comes_back(network, report):
    alice, bob = network["alice"], network["bob"]
    alice.contacts("add", "Bob", bob.tox_ids["bob"], "bob@bob.test", "--user", "alice")
    assert wait_until(lambda: lookup(alice, "bob@bob.test") is not None, ROUTING)
    assert lookup(alice, "bob@bob.test") == f"toxbridge:{alice.postfix.bridge_nexthop}"
    assert lookup(alice, "*") is None and lookup(alice, "nobody@bob.test") is None

    mid, msg = compose("Alice <alice@alice.test>", "bob@bob.test", "over tox by name")
    started = time.monotonic()
    alice.postfix.send("alice@alice.test", ["bob@bob.test"], msg)
    got = arrived(bob, "bob", mid)
    there = time.monotonic() - started
    assert got["X-Toxbridge-Id"] and f"Tox key {key(alice, 'alice')}" in received(got)
    assert "x-tox=pass" in str(got["Authentication-Results"])

    # bob's household did not know alice's address: it learned it from the verified key
    bob.wait_log(f"bob: learned alice@alice.test -> Tox key {key(alice, 'alice')[:8]}", ROUTING)
    listing = bob.contacts("list").stdout
    assert any(
        line.split("\t")[1:4] == ["alice@alice.test", key(alice, "alice").upper(), "bob"]
        and "learned" in line
        for line in listing.splitlines()
    )
    assert lookup(bob, "alice@alice.test") == f"toxbridge:{bob.postfix.bridge_nexthop}"

    reply_mid, reply = compose(
        "bob@bob.test", "alice@alice.test", "Re: over tox by name", f"In-Reply-To: {mid}\r\n"
    )
    started = time.monotonic()
    bob.postfix.send("bob@bob.test", ["alice@alice.test"], reply)
    back = arrived(alice, "alice", reply_mid)
    report(
        f"alice -> bob@bob.test over Tox {there:.2f} s; bob's reply to alice@alice.test "
        f"(learned pairing) back over Tox {time.monotonic() - started:.2f} s"
    )
    assert f"Tox key {key(bob, 'bob')}" in received(back)
    results = str(back["Authentication-Results"])
    assert "x-tox=pass" in results and "contact 'Bob'" in results


def test_contact_added_while_running_routes_and_removing_it_stops(network, report):
    """alice and carol are friends (conftest): removing the contact for carol's key ends that too;
    the test makes them friends again for the tests after it."""
    alice, carol = network["alice"], network["carol"]
    address = "carol.new@carol.test"
    added = time.monotonic()
    alice.contacts("add", "Carol", carol.tox_ids["carol"], address, "--user", "alice")
    assert wait_until(lambda: lookup(alice, address) is not None, ROUTING)
    routed = time.monotonic() - added
    mid, msg = compose("alice@alice.test", address, "new contact")
    alice.postfix.send("alice@alice.test", [address], msg)
    arrived(carol, "carol", mid)
    report(
        f"contact added -> socketmap answers in {routed:.2f} s; first mail in carol's IMAP "
        f"{time.monotonic() - added:.2f} s after `contacts add`"
    )

    mark, carol_mark = alice.log_mark(), carol.log_mark()
    removed = time.monotonic()
    alice.contacts("remove", "Carol")
    alice.wait_log(f"alice: ended the Tox friendship with {key(carol, 'carol')[:8]}", ROUTING, since=mark)
    assert key(carol, "carol") not in friends_of(alice, "alice")
    carol.wait_log(f"carol: friend {key(alice, 'alice')[:8]} went offline", ARRIVAL, since=carol_mark)
    report(f"carol saw alice's bridge end the friendship {time.monotonic() - removed:.2f} s after `remove`")
    # carol still lists alice, yet her mail finds no friend at alice: it waits in carol's queue
    carol_mid, carol_msg = compose("carol@carol.test", alice.tox_address("alice"), "friendship ended")
    carol.postfix.send("carol@carol.test", [alice.tox_address("alice")], carol_msg)
    assert wait_until(lambda: deferred(carol, alice.tox_address("alice")), ARRIVAL), carol.postfix.queue()
    assert not delivered(alice, "alice", carol_mid)

    assert wait_until(lambda: lookup(alice, address) is None, ROUTING)
    mid2, msg2 = compose("alice@alice.test", address, "contact removed")
    alice.postfix.send("alice@alice.test", [address], msg2)
    bounce = bounce_for(alice, "alice", mid2)
    # Postfix may still hold the route for a while; then the bridge itself refuses it
    assert ("not a Tox contact" in bounce) or ("sends no mail beyond this machine" in bounce)
    assert not delivered(carol, "carol", mid2)
    report(
        "after `contacts remove` the mail bounced: "
        + (
            "the bridge refused it (Postfix still had the route)"
            if "not a Tox contact" in bounce
            else "Postfix routed it the normal way"
        )
    )
    # friends again, as the session's other tests expect: a mail to carol's Tox ID asks again
    again, msg = compose("alice@alice.test", carol.tox_address("carol"), "friends again")
    alice.postfix.send("alice@alice.test", [carol.tox_address("carol")], msg)
    arrived(carol, "carol", again)
    arrived(alice, "alice", carol_mid)  # carol's deferred mail is pushed once they are friends again


def deferred(home, address: str) -> bool:
    """Does the household's Postfix hold mail for `address`, deferred with 4.4.1?"""
    return any(
        r.get("address", "").lower() == address.lower() and "4.4.1" in r.get("delay_reason", "")
        for q in home.postfix.queue()
        for r in q.get("recipients", [])
    )


def friends_of(home, user: str) -> list[str]:
    """The keys of `user`'s Tox friends, as the running bridge tells `toxbridge status`."""
    snapshot = control.query(control.socket_path(load(home.config_path).state_dir), "status")
    assert snapshot is not None, f"{home.name}'s bridge does not answer on its control socket"
    identity = next(i for i in snapshot["identities"] if i["mailbox"] == user)
    return [f["key"] for f in identity["friends"]]


def test_removing_an_accepted_stranger_ends_the_tox_friendship(network, bootstrap_node):
    """alice's bridge accepts strangers; `contacts list` shows them, `contacts remove KEY` ends them."""
    alice = network["alice"]
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, alice, "alice")
        stranger = client.node.public_key.hex()
        listing = [line.split("\t") for line in alice.contacts("list").stdout.splitlines()]
        assert any(row[2] == stranger.upper() and "accepted" in row[4] for row in listing), listing
        mark = alice.log_mark()
        alice.contacts("remove", stranger[:12])
        alice.wait_log(f"alice: ended the Tox friendship with {stranger[:8]}", ROUTING, since=mark)
        assert wait_until(lambda: client.call(client.node.friend_connection, friend) == 0, ARRIVAL)
        assert stranger not in friends_of(alice, "alice")
        assert stranger.upper() not in alice.contacts("list").stdout
    finally:
        client.close()


def test_a_friend_made_by_mailing_its_tox_id_is_listed_and_removable(network, bootstrap_node):
    """alice writes to a full Tox ID (the bridge sends the friend request): that friend is no
    contact and no stranger who asked, yet `contacts list` shows it and `contacts remove PREFIX`
    ends the friendship (issue 17)."""
    alice = network["alice"]
    client = PlainClient(bootstrap_node)
    try:
        key = client.node.public_key.hex()
        friend = befriended_by_mail(client, alice, "alice", "hi")
        listing = [line.split("\t") for line in alice.contacts("list").stdout.splitlines()]
        assert any(row[2] == key.upper() and row[4].startswith("friend we asked") for row in listing), listing
        mark = alice.log_mark()
        alice.contacts("remove", key[:10])
        alice.wait_log(f"alice: ended the Tox friendship with {key[:8]}", ROUTING, since=mark)
        assert wait_until(lambda: client.call(client.node.friend_connection, friend) == 0, ARRIVAL)
        assert key not in friends_of(alice, "alice")
        assert key.upper() not in alice.contacts("list").stdout
    finally:
        client.close()
        for entry in alice.postfix.queue():
            if any(key in r.get("address", "") for r in entry.get("recipients", [])):
                subprocess.run(
                    ["postsuper", "-c", str(alice.postfix.config_dir), "-d", entry["queue_id"]],
                    check=False,
                    capture_output=True,
                )


def test_friend_forging_another_contacts_address_is_rejected(network):
    alice, bob = network["alice"], network["bob"]
    alice.contacts("add", "Carol the real one", carol_id(network), "carol.real@carol.test", "--user", "alice")
    assert wait_until(lambda: lookup(alice, "carol.real@carol.test") is not None, ROUTING)
    mark = alice.log_mark()
    mid, msg = compose("Carol <carol.real@carol.test>", alice.tox_address("alice"), "forged")
    bob.postfix.send("bob@bob.test", [alice.tox_address("alice")], msg)
    bounce = bounce_for(bob, "bob", mid)
    assert "5.7.1" in bounce and "carol.real@carol.test belongs to another Tox contact" in bounce
    alice.wait_log(f"friend {key(bob, 'bob')[:8]} sent a mail with a sender it may not use", 5, since=mark)
    assert not any(mid.encode() in m for m in alice.dovecot.fetch_inbox("alice"))


def carol_id(network) -> str:
    return network["carol"].tox_ids["carol"]


def test_forged_sender_is_flagged_where_the_policy_says_flag(network):
    """carol's household runs forged_sender: flag (conftest)."""
    alice, bob, carol = network["alice"], network["bob"], network["carol"]
    carol.contacts("add", "Bob", bob.tox_ids["bob"], "bob@bob.test")
    assert wait_until(lambda: lookup(carol, "bob@bob.test") is not None, ROUTING)
    mid, msg = compose("Bob <bob@bob.test>", carol.tox_address("carol"), "flag me")
    alice.postfix.send("alice@alice.test", [carol.tox_address("carol")], msg)
    got = arrived(carol, "carol", mid)
    warning = str(got["X-Toxbridge-Warning"])
    assert "NOT verified" in warning and "bob@bob.test belongs to another Tox contact" in warning
    assert key(alice, "alice") in warning
    assert "x-tox=fail" in str(got["Authentication-Results"])
    assert got.get_content().strip() == "Hello."


def test_a_friend_cannot_preset_our_trust_headers(network):
    alice, bob = network["alice"], network["bob"]
    fake = (
        f"Authentication-Results: bridge.bob.test; x-tox=pass x-tox.key={'0' * 64}\r\n"
        "X-Toxbridge-Warning: none\r\nAuthentication-Results: elsewhere.example; spf=pass\r\n"
    )
    mid, msg = compose("alice@alice.test", bob.tox_address("bob"), "preset headers", fake)
    alice.postfix.send("alice@alice.test", [bob.tox_address("bob")], msg)
    got = arrived(bob, "bob", mid)
    results = got.get_all("Authentication-Results")
    assert results is not None
    assert [r for r in results if str(r).startswith("bridge.bob.test")] == [
        r for r in results if "x-tox=pass" in str(r) and key(alice, "alice") in str(r)
    ]
    assert any("elsewhere.example" in str(r) for r in results)
    assert got["X-Toxbridge-Warning"] is None


@pytest.fixture(scope="module")
def dora(lab_root, bootstrap_node):
    """A household with the defaults a new one gets: requests from strangers wait, Tox only."""
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    home = Household(lab_root, "dora", {"dora": "dora-pw"}, boot, friend_requests="pending", tox_only=True)
    try:
        home.start()
        yield home
    finally:
        home.stop()


def test_friend_request_from_a_stranger_waits_until_accepted(dora, bootstrap_node):
    client = PlainClient(bootstrap_node)
    try:
        stranger = client.node.public_key.hex()
        mark = dora.log_mark()
        friend = client.call(client.node.friend_add, bytes.fromhex(dora.tox_ids["dora"]), b"Hi, it's Eve")
        dora.wait_log(f"dora: friend request from {stranger} .* is pending", ARRIVAL, since=mark)
        pending = dora.contacts("pending").stdout
        assert f"dora\t{stranger.upper()}\t" in pending and "Hi, it's Eve" in pending
        assert client.call(client.node.friend_connection, friend) == 0
        assert stranger.upper() not in dora.contacts("list").stdout

        dora.contacts("accept", stranger[:12], "--name", "Eve", "--address", "eve@example.org")
        assert wait_until(lambda: client.call(client.node.friend_connection, friend) != 0, ARRIVAL)
        assert stranger.upper() not in dora.contacts("pending").stdout
        listing = dora.contacts("list").stdout
        assert f"Eve\teve@example.org\t{stranger.upper()}\tall\t" in listing  # dora is the only user
    finally:
        client.close()


def test_a_new_contact_gets_a_friend_request_that_says_who_asks(dora, bootstrap_node):
    client = PlainClient(bootstrap_node)
    try:
        dora.contacts("add", "Peer", client.node.address.hex(), "peer@example.org")
        dora_key = bytes.fromhex(key(dora, "dora"))
        assert wait_until(lambda: any(k == dora_key for k, _ in client.requests), ARRIVAL)
        message = next(m for k, m in client.requests if k == dora_key).decode()
        assert "dora@dora.test" in message and "bridge.dora.test" in message
        dora.wait_log(f"dora: friend {client.node.public_key.hex()[:8]} online", ARRIVAL)
    finally:
        client.close()


def test_tox_only_household_refuses_mail_to_non_contacts_at_once(dora):
    mid, msg = compose("dora@dora.test", "someone@example.net", "not on tox")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        dora.postfix.send("dora@dora.test", ["someone@example.net"], msg)
    code, text = refused.value.recipients["someone@example.net"]
    assert code == 550 and b"5.1.1" in text and b"not a Tox contact of this household" in text


def test_a_contacts_request_is_accepted_while_strangers_wait(dora, bootstrap_node):
    """A contact known only by public key: dora cannot ask it, but its own request gets through
    although dora keeps strangers' requests pending."""
    client = PlainClient(bootstrap_node)
    try:
        mark = dora.log_mark()
        dora.contacts("add", "Known by key", client.node.public_key.hex(), "known@example.org")
        dora.wait_log("contact 'Known by key' .* is now a Tox friend", ROUTING, since=mark)
        friend = client.call(client.node.friend_add, bytes.fromhex(dora.tox_ids["dora"]), b"it's me")
        assert wait_until(lambda: client.call(client.node.friend_connection, friend) != 0, ARRIVAL)
        assert client.node.public_key.hex().upper() not in dora.contacts("pending").stdout
    finally:
        client.close()


HOSTILE_REQUEST = (
    b"\x1b[2J\x1b[31mYour bridge is broken\x1b[0m\r\n"
    b"dora\tDEADBEEF\t2020-01-01 00:00\ta fake pending row\n\x07\xe2\x80\xae" + b"A" * 800
)


def test_a_strangers_request_cannot_write_to_the_operators_terminal(dora, bootstrap_node):
    """A stranger's friend request full of escape codes, newlines and length: `contacts pending`
    and the bridge's log show it escaped, on one bounded line."""
    client = PlainClient(bootstrap_node)
    try:
        stranger = client.node.public_key.hex()
        mark = dora.log_mark()
        client.call(client.node.friend_add, bytes.fromhex(dora.tox_ids["dora"]), HOSTILE_REQUEST)
        dora.wait_log(f"dora: friend request from {stranger} .* is pending", ARRIVAL, since=mark)
        out = dora.contacts("pending").stdout
        assert not [c for c in out if not c.isprintable() and c not in "\t\n"], repr(out)
        (row,) = [line for line in out.splitlines() if stranger.upper() in line]
        assert not [line for line in out.splitlines() if line.startswith("dora\tDEADBEEF")]  # no fake row
        message = row.split("\t")[3]
        assert message.startswith("\\x1b[2J") and len(message) <= 300, message
        with open(dora.bridge_log, "rb") as log:
            log.seek(mark)
            logged = [line for line in log.read().splitlines() if stranger.encode() in line]
        assert logged and not [line for line in logged if b"\x1b" in line or len(line) > 600], logged
    finally:
        client.close()


def outcome(home, recipient: str, since: int, timeout: float = ARRIVAL) -> str:
    """The status (sent, bounced, deferred) of the first delivery to `recipient` logged after `since`."""
    found: list[str] = []

    def logged() -> bool:
        with open(home.postfix.maillog, "rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        match = re.search(rf"to=<{re.escape(recipient)}>, .*status=(\w+)", text)
        found[:] = [match.group(1)] if match else []
        return bool(match)

    assert wait_until(logged, timeout, interval=0.1), _fs.tail(home.postfix.maillog)
    return found[0]


def test_a_pairing_bob_learned_carries_ghosts_mail_over_tox_too(network):
    """Issue 15.5: alice mailed bob from her work address; ghost (bob's household, also alice's
    friend) writes to it. Postfix sends it to the bridge for everyone, so ghost's mail must go
    over Tox from ghost's own identity, not bounce as `not a Tox contact`."""
    alice, bob = network["alice"], network["bob"]
    work = f"alice.work-{uuid.uuid4().hex[:8]}@alice.test"
    mid, msg = compose(f"Alice <{work}>", bob.tox_address("bob"), "from work")
    alice.postfix.send("alice@alice.test", [bob.tox_address("bob")], msg)
    arrived(bob, "bob", mid)
    bob.wait_log(f"bob: learned {work} -> Tox key {key(alice, 'alice')[:8]}", ROUTING)
    # `toxbridge run` learned it; `toxbridge routes`, another process, answers Postfix: it reads
    # the roster at each lookup, so the pairing routes there as soon as it is written.
    tox_route = f"toxbridge:{bob.postfix.bridge_nexthop}"
    assert wait_until(lambda: lookup(bob, work) == tox_route, 2, interval=0.05), lookup(bob, work)

    since = bob.postfix.maillog.stat().st_size
    mid2, msg2 = compose("ghost@bob.test", work, "ghost writes to alice's work address")
    bob.postfix.send("ghost@bob.test", [work], msg2)
    assert outcome(bob, work, since) == "sent", _fs.tail(bob.bridge_log)
    got = arrived(alice, "alice", mid2)
    assert f"Tox key {key(bob, 'ghost')}" in received(got)


def test_an_extension_of_a_contacts_address_crosses_tox_as_written(network):
    """Issue 15.7: bob+news@bob.test is bob@bob.test's (recipient_delimiter +), as Postfix sees it."""
    alice, bob = network["alice"], network["bob"]
    if lookup(alice, "bob@bob.test") is None:
        alice.contacts("add", "Bob", bob.tox_ids["bob"], "bob@bob.test", "--user", "alice")
        assert wait_until(lambda: lookup(alice, "bob@bob.test") is not None, ROUTING)
    assert lookup(alice, "Bob+News@bob.test") == f"toxbridge:{alice.postfix.bridge_nexthop}"
    mark = alice.log_mark()
    mid, msg = compose("alice@alice.test", "Bob+News@bob.test", "with an extension")
    alice.postfix.send("alice@alice.test", ["Bob+News@bob.test"], msg)
    got = arrived(bob, "bob", mid)
    assert f"Tox key {key(alice, 'alice')}" in received(got)
    alice.wait_log(rf"to=<Bob\+News@bob\.test>, peer={key(bob, 'bob')[:8]}, .*status=sent", 5, since=mark)
