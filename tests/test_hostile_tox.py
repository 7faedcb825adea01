"""A hostile or broken Tox friend of alice's bridge (a plain client, tests/toxpeer.py).

Whatever the friend sends — a file that is not a mail, a size over the limit, a transfer it
abandons or drops, a flood, result packets that make no sense — is refused or cancelled and
logged once, no byte of it reaches a mailbox, and the bridge keeps serving: after each case a
normal mail from alice through Postfix still reaches bob.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid

import pytest
from payloads import encode_payload
from toxpeer import PlainClient, befriend

from toxbridge.config import load
from toxbridge.lab.ports import wait_until
from toxbridge.tox import wire
from toxbridge.tox.library import FILE_KIND_AVATAR, FILE_KIND_DATA

pytestmark = pytest.mark.integration

WAIT = 30.0
FLOOD = 40
MAX_INCOMING_PER_FRIEND = 16  # toxbridge/tox/incoming.py: more at once are refused with 4.3.2


@pytest.fixture(scope="module")
def eve(network, bootstrap_node):
    """A plain client that asked alice for friendship (her bridge accepts requests)."""
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, network["alice"], "alice")
        yield client, friend
    finally:
        client.close()


def mail_for_alice(client: PlainClient, network, size: int = 2000) -> tuple[bytes, bytes]:
    """(payload, token): a well-formed payload that alice's bridge would deliver if it arrived whole."""
    token = uuid.uuid4().hex.encode()
    body = b"Subject: hostile " + token + b"\r\n\r\n" + (b"x" * 76 + b"\r\n") * (size // 78 + 1)
    sender = client.node.public_key.hex() + "@tox"
    rcpt = network["alice"].tox_address("alice")
    return encode_payload(wire.Envelope(sender, (rcpt,), len(body)), body), token


def landed(home, token: bytes) -> bool:
    return any(token in m for m in home.dovecot.fetch_inbox("alice"))


def log_lines(home, since: int, pattern: str) -> list[str]:
    with open(home.bridge_log, "rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if re.search(pattern, line)]


def still_serving(network) -> None:
    """A normal mail alice → bob through Postfix and both bridges still arrives."""
    alice, bob = network["alice"], network["bob"]
    token = uuid.uuid4().hex
    alice.postfix.send(
        alice.address("alice"),
        [bob.tox_address("bob")],
        f"From: alice@alice.test\r\nSubject: still serving {token}\r\n\r\nok\r\n".encode(),
    )
    assert wait_until(
        lambda: any(token.encode() in m for m in bob.dovecot.fetch_inbox("bob")), 60, interval=0.2
    )


def no_traceback(home, since: int) -> None:
    assert not log_lines(home, since, r"Traceback|ERROR"), "the bridge hit an unexpected error"


def max_payload(home) -> int:
    return load(home.config_path).max_message_size + wire.MAX_HEADER + wire.PREFIX.size


@pytest.mark.parametrize(
    "kind, filename, logged",
    [(FILE_KIND_AVATAR, wire.MAIL_FILENAME, 0), (FILE_KIND_DATA, b"holiday.jpg", 1)],
)
def test_file_that_is_not_a_mail_is_cancelled(network, eve, kind, filename, logged):
    """A file that is not a mail, from a friend that greeted as a bridge, is refused, logged
    once; an avatar (chat apps offer theirs on every connection) is refused without a line.
    (From a chat app a file is refused and the sender told: test_chat_e2e.)"""
    alice = network["alice"]
    client, friend = eve
    payload, token = mail_for_alice(client, network)
    mark = alice.log_mark()
    client.send_packet(friend, wire.encode_greeting("eve-bridge"))
    alice.wait_log(f"alice: friend {client.node.public_key.hex()[:8]} is a bridge", WAIT, since=mark)
    number = client.send_file(friend, payload, kind=kind, filename=filename)
    assert wait_until(lambda: number in client.cancelled, WAIT)
    if logged:
        alice.wait_log("not a mail", WAIT, since=mark)
    assert len(log_lines(alice, mark, "not a mail")) == logged
    assert not client.served.get(number), "bytes were asked for before the refusal"
    assert not landed(alice, token)
    no_traceback(alice, mark)


def test_oversized_announcement_is_answered_552_and_cancelled(network, eve):
    alice = network["alice"]
    client, friend = eve
    payload, token = mail_for_alice(client, network)
    file_id = hashlib.sha256(payload).digest()
    seen = len(client.results)
    number = client.send_file(friend, payload, file_id, size=max_payload(alice) + 1)
    assert wait_until(lambda: client.results_for(file_id, seen) and number in client.cancelled, WAIT)
    ((reply,),) = client.results_for(file_id, seen)
    assert (reply.code, reply.text[:5]) == (552, "5.3.4"), reply
    assert not client.served.get(number)
    assert not landed(alice, token)


def test_oversized_announcement_is_logged_once(network, eve):
    alice = network["alice"]
    client, friend = eve
    payload, _ = mail_for_alice(client, network)
    file_id = hashlib.sha256(payload).digest()
    seen, mark = len(client.results), alice.log_mark()
    client.send_file(friend, payload, file_id, size=max_payload(alice) + 1)
    assert wait_until(lambda: client.results_for(file_id, seen), WAIT)
    assert wait_until(lambda: log_lines(alice, mark, "WARNING"), 2)  # a log line comes with the answer
    assert len(log_lines(alice, mark, "WARNING")) == 1


def test_transfer_cancelled_mid_way_delivers_nothing(network, eve):
    alice = network["alice"]
    client, friend = eve
    payload, token = mail_for_alice(client, network, size=300_000)
    mark = alice.log_mark()
    number = client.send_file(friend, payload, serve=100_000)
    assert wait_until(lambda: client.served.get(number, 0) >= 100_000, WAIT)
    client.cancel(friend, number)
    key = client.node.public_key.hex()[:8]
    alice.wait_log(f"friend {key} (cancelled|stopped)", WAIT, since=mark)
    still_serving(network)
    assert len(log_lines(alice, mark, f"friend {key}")) == 1
    assert not landed(alice, token)
    no_traceback(alice, mark)


def test_friend_dropping_mid_transfer_delivers_nothing(network, bootstrap_node):
    """A second client whose node stops (clean tox_kill) while its mail is half sent."""
    alice = network["alice"]
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, alice, "alice")
        payload, token = mail_for_alice(client, network, size=300_000)
        mark = alice.log_mark()
        number = client.send_file(friend, payload, serve=100_000)
        assert wait_until(lambda: client.served.get(number, 0) >= 100_000, WAIT)
    finally:
        client.close()
    key = client.node.public_key.hex()[:8]
    alice.wait_log(f"alice: friend {key} went offline", 60, since=mark)
    still_serving(network)
    assert not landed(alice, token)
    assert not log_lines(alice, mark, "WARNING.*" + key), "a vanished friend is not a broken transfer"
    no_traceback(alice, mark)


def flood(client: PlainClient, friend: int, network) -> tuple[list[bytes], list[int], list[bytes], int]:
    """FLOOD mails offered at once, none of them served: (file_ids, numbers, tokens, results seen before)."""
    mails = [mail_for_alice(client, network, size=500) for _ in range(FLOOD)]
    seen = len(client.results)

    def offer_all() -> list[int]:  # one loop turn: the bridge sees all the offers together
        out = []
        for payload, _ in mails:
            number = client.node.file_send(
                friend, FILE_KIND_DATA, len(payload), hashlib.sha256(payload).digest(), wire.MAIL_FILENAME
            )
            client.outgoing[number], client.limit[number] = payload, 0
            client.cancelled.discard(number)
            out.append(number)
        return out

    numbers = client.call(offer_all)
    return [hashlib.sha256(p).digest() for p, _ in mails], numbers, [t for _, t in mails], seen


def refused_busy(client: PlainClient, file_ids: list[bytes], seen: int) -> list[bytes]:
    return [
        f
        for f in file_ids
        if any(r[0].code == 451 and r[0].text.startswith("4.3.2") for r in client.results_for(f, seen))
    ]


def test_flood_of_transfers_is_limited_and_the_bridge_keeps_serving(network, eve):
    alice = network["alice"]
    client, friend = eve
    mark = alice.log_mark()
    file_ids, numbers, tokens, seen = flood(client, friend, network)
    expected = FLOOD - MAX_INCOMING_PER_FRIEND
    assert wait_until(lambda: len(refused_busy(client, file_ids, seen)) >= expected, WAIT)
    assert len(refused_busy(client, file_ids, seen)) == expected
    refusals = log_lines(alice, mark, "WARNING")  # logged, but not once per refused transfer
    assert 1 <= len(refusals) <= expected, refusals
    assert wait_until(lambda: len(client.cancelled & set(numbers)) >= expected, WAIT)
    # The friend gives up on the rest: its slots at alice are freed again.
    for number in numbers:
        if number not in client.cancelled:
            client.cancel(friend, number)
    junk = b"GET / HTTP/1.0\r\n\r\n" * 10
    junk_id = hashlib.sha256(junk + uuid.uuid4().bytes).digest()
    seen_junk = len(client.results)
    client.send_file(friend, junk, junk_id)
    assert wait_until(lambda: client.results_for(junk_id, seen_junk), WAIT)
    ((reply,),) = client.results_for(junk_id, seen_junk)
    assert reply.code == 554, f"a transfer after the flood was not read: {reply}"
    still_serving(network)
    box = alice.dovecot.fetch_inbox("alice")
    assert not [t for t in tokens if any(t in m for m in box)]
    no_traceback(alice, mark)


def test_malformed_result_packets_are_logged_and_ignored(network, eve):
    alice = network["alice"]
    client, friend = eve
    rng = random.Random(3)
    good = wire.encode_result(bytes(rng.randrange(256) for _ in range(32)), [wire.Reply(250, "2.0.0 ok")])
    malformed = [
        bytes([wire.PACKET_RESULT]) + bytes(rng.randrange(256) for _ in range(200)),  # random bytes
        bytes([wire.PACKET_RESULT]) + bytes(32),  # file_id, no count
        good[:-1],  # truncated reply text
        good + b"\0",  # trailing byte
        good[:33] + b"\3" + good[34:],  # three replies announced, one there
        good[:34] + b"\x03\x84" + good[36:],  # reply code 900
    ]
    ignored = [bytes([wire.PACKET_GREETING]), bytes([0xBF]) + b"unknown packet type"]
    mark = alice.log_mark()
    for packet in malformed + [good] + ignored:
        client.send_packet(friend, packet)
    assert wait_until(lambda: len(log_lines(alice, mark, "malformed result packet")) >= len(malformed), WAIT)
    alice.wait_log("no longer waiting", WAIT, since=mark)  # the well-formed answer for an unknown mail
    still_serving(network)
    assert len(log_lines(alice, mark, "malformed result packet")) == len(malformed)
    assert len(log_lines(alice, mark, "no longer waiting")) == 1
    no_traceback(alice, mark)
