"""A plain Tox client (a bare ToxNode, not a bridge) as alice's friend.

It shows that the first mail to a new plain client goes as chat once the client has been online
without a greeting (never as a transfer it cannot take), and that transfers the bridge cannot trust are refused and answered, with nothing in the mailbox.
"""

from __future__ import annotations

import hashlib

import pytest
from payloads import encode_payload
from toxpeer import PlainClient, befriended_by_mail

from toxbridge.lab.ports import wait_until
from toxbridge.tox import wire

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mallory(network, bootstrap_node):
    """A plain client that alice befriended by writing to its full Tox ID."""
    alice = network["alice"]
    client = PlainClient(bootstrap_node)
    try:
        friend = befriended_by_mail(client, alice, "alice", "hi mallory")
        tox_id = client.node.address.hex()
        yield client, friend, tox_id
    finally:
        client.close()


def test_the_first_mail_to_a_new_chat_app_goes_as_chat_not_as_a_file(network, mallory):
    """alice wrote to mallory's full Tox ID: the friend request went out, the mail waited. When
    mallory comes online its kind is not known, so the mail waits at DATA (up to GREETING_WAIT)
    for a greeting; none comes, mallory is a chat app, and the mail goes as chat messages on
    that attempt: never a file it cannot take (issue 17 item 6)."""
    alice = network["alice"]
    client, _, tox_id = mallory
    alice.postfix.flush()
    alice.wait_log(f"alice: friend {tox_id[:8]} is a chat app, not a bridge \\(no greeting", 60)
    assert wait_until(lambda: any(b"hello" in m for m in client.messages), 60), client.messages
    assert any(b"hi mallory" in m for m in client.messages)
    alice.wait_log(rf"to=<{tox_id}@tox>, .*status=sent", 30)
    assert not client.complete  # no transfer was offered
    assert not alice.log_has(rf"to=<{tox_id}@tox>, .*status=deferred \(451 4\.4\.1 the Tox transfer")


@pytest.mark.parametrize(
    "name, payload, file_id, code",
    [
        ("hash mismatch", encode_payload(wire.Envelope("m@tox", ("a@tox",), 5), b"hello"), b"\x07" * 32, 451),
        ("not a payload", b"GET / HTTP/1.0\r\n\r\n" * 10, None, 554),
        (
            "lying size",
            wire.PREFIX.pack(wire.MAGIC, 1, 38) + b'{"from":"m","to":["a"],"size":99999999}',
            None,
            554,
        ),
    ],
)
def test_untrusted_transfers_are_refused_and_answered(network, mallory, name, payload, file_id, code):
    alice = network["alice"]
    client, friend, _ = mallory
    before = len(alice.dovecot.fetch_inbox("alice"))
    expected_id = file_id or hashlib.sha256(payload).digest()
    seen = len(client.results)
    client.send_file(friend, payload, file_id)

    def answered() -> list[tuple[bytes, list[wire.Reply]]]:
        decoded = [wire.decode_result(p) for p in client.results[seen:] if p[0] == wire.PACKET_RESULT]
        return [d for d in decoded if d[0] == expected_id]

    assert wait_until(lambda: bool(answered()), 30), name
    ((_, replies),) = answered()
    assert [r.code for r in replies] == [code], replies
    assert len(alice.dovecot.fetch_inbox("alice")) == before
