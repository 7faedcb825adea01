"""Compressed mail between bridges, with real Postfix, Dovecot and toxcore (tox.compression).

A bridge announces zlib in the packet after its greeting; mail to a friend that announced it goes
compressed when that makes it smaller, and arrives in Dovecot byte for byte. A friend that
greets the old way (no capabilities packet: a bridge from before compression) gets every mail
raw. A friend that sends a small compressed transfer inflating beyond the household's limit (a
zlib bomb) is refused 552 5.3.4 while it arrives: nothing stored, its partial file dropped.
Codec and receiver in detail: test_wire.py, test_compressed_transfers.py.
"""

from __future__ import annotations

import re
import subprocess
import uuid
import zlib

import pytest
from payloads import decode_payload, forged_zlib_payload
from toxpeer import PlainClient, befriend

from toxbridge.config import load
from toxbridge.lab.ports import wait_until
from toxbridge.tox import wire

pytestmark = pytest.mark.integration

WAIT = 60.0


def letter(token: str, lines: int = 3000) -> bytes:
    body = b"".join(
        b"Line %d of a long letter home, token %s.\r\n" % (i, token.encode()) for i in range(lines)
    )
    return f"From: alice@alice.test\r\nSubject: compressed {token}\r\n\r\n".encode() + body


def delivery_line(home, since: int, token_id: str) -> str:
    with open(home.bridge_log, "rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", "replace")
    return next((line for line in text.splitlines() if "status=sent" in line and token_id in line), "")


def test_mail_between_bridges_goes_compressed_and_arrives_unchanged(network):
    alice, bob = network["alice"], network["bob"]
    token = uuid.uuid4().hex
    message = letter(token)
    mark = bob.log_mark()
    alice.postfix.send(alice.address("alice"), [bob.tox_address("bob")], message)
    assert wait_until(lambda: any(token.encode() in m for m in bob.dovecot.fetch_inbox("bob")), WAIT, 0.2)
    stored = next(m for m in bob.dovecot.fetch_inbox("bob") if token.encode() in m)
    assert stored.endswith(message[message.index(b"\r\n\r\n") :]), "the body changed on the way"
    bob.wait_log(r"status=sent", WAIT, since=mark)
    line = delivery_line(bob, mark, "to=<")
    found = re.search(r"size=(\d+), wire=(\d+)", line)
    assert found, line
    size, on_wire = (int(x) for x in found.groups())
    assert on_wire < size / 3, line  # the letter compresses to about a fifth


@pytest.fixture
def peer(network, bootstrap_node):
    """A plain client befriended by alice, that greets her as a bridge would (the test says how);
    alice's mail for it is removed from her queue afterwards (it never answers)."""
    client = PlainClient(bootstrap_node)
    alice = network["alice"]
    try:
        yield client, befriend(client, alice, "alice")
    finally:
        client.close()
        key = client.node.public_key.hex()
        for entry in alice.postfix.queue():
            if any(key in r.get("address", "") for r in entry.get("recipients", [])):
                subprocess.run(
                    ["postsuper", "-c", str(alice.postfix.config_dir), "-d", entry["queue_id"]],
                    check=False,
                    capture_output=True,
                )


@pytest.mark.parametrize("announces", [False, True], ids=["old greeting", "greeting and zlib"])
def test_only_a_peer_that_announced_zlib_gets_compressed_mail(network, peer, announces):
    alice = network["alice"]
    client, friend = peer
    key = client.node.public_key.hex()
    mark = alice.log_mark()
    client.send_packet(friend, wire.encode_greeting("toxbridge 0.0.9"))  # what every bridge sends
    alice.wait_log(f"alice: friend {key[:8]} is a bridge", WAIT, since=mark)
    if announces:
        client.send_packet(friend, wire.encode_capabilities((wire.ZLIB,)))
        alice.wait_log(f"alice: friend {key[:8]} can zlib", WAIT, since=mark)
    token = uuid.uuid4().hex
    message = letter(token)
    alice.postfix.send(alice.address("alice"), [f"{key}@tox"], message)
    assert wait_until(lambda: bool(client.complete), WAIT)
    payload = client.complete[0]
    envelope, received = decode_payload(payload, 1 << 24)
    assert received.endswith(message[message.index(b"\r\n\r\n") :])  # Postfix adds a header field or two
    assert envelope.encoding == (wire.ZLIB if announces else "")
    assert (len(payload) < len(received) / 3) if announces else payload.endswith(received)


def test_zlib_bomb_is_refused_552_nothing_stored_partial_dropped(network, bootstrap_node):
    alice = network["alice"]
    client = PlainClient(bootstrap_node)
    try:
        friend = befriend(client, alice, "alice")
        limit = load(alice.config_path).max_message_size
        token = uuid.uuid4().hex.encode()
        bomb_text = b"Subject: bomb " + token + b"\r\n\r\n" + bytes(limit + (1 << 20))
        bomb = forged_zlib_payload(
            client.node.public_key.hex() + "@tox",
            alice.tox_address("alice"),
            limit,
            zlib.compress(bomb_text, 9),
        )
        assert len(bomb) < 128 * 1024  # small on the wire, beyond the limit inflated
        file_id = wire.file_id_of(bomb)
        seen, mark = len(client.results), alice.log_mark()
        number = client.send_file(friend, bomb)
        assert wait_until(lambda: client.results_for(file_id, seen) and number in client.cancelled, WAIT)
        ((reply,),) = client.results_for(file_id, seen)
        assert (reply.code, reply.text[:5]) == (552, "5.3.4"), reply
        alice.wait_log("inflates to more than", WAIT, since=mark)
        partial_dir = alice.root / "state" / "partial" / "alice"
        assert not [p for p in partial_dir.glob("*") if file_id.hex() in p.name], "the bomb's partial stayed"
        assert not any(token in m for m in alice.dovecot.fetch_inbox("alice"))
    finally:
        client.close()
