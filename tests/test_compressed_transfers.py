"""Compressed mail on the receiving side, with a fake node (no Tox): a zlib payload resumes over
its bytes on the wire, across cancels and across a restart, and is delivered inflated, byte for
byte; the sender compresses only for a friend whose bridge inflates; a small transfer that inflates beyond its claim (a zlib bomb) is refused 552 5.3.4 as it
arrives, its partial file removed and nothing delivered. With real bridges: test_compression.py."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path
from typing import cast

import pytest
from payloads import encode_payload, forged_zlib_payload
from test_partial_caps import CAP, KIB, MAIL_PEER, Friend, Node, receiver

from toxbridge.contacts.sender_check import Verdict
from toxbridge.mail.lmtp_out import Spooled
from toxbridge.mail.smtpreply import Reply
from toxbridge.tox import wire
from toxbridge.tox.library import FILE_CONTROL_CANCEL
from toxbridge.tox.node import ToxNode
from toxbridge.tox.outgoing import Sender

TEXT = b"From: a@b.example\r\nSubject: zlib\r\n\r\n" + b"".join(
    b"line %d of a letter\r\n" % i for i in range(30000)
)


def with_delivery(inbox, delivered: list[bytes]):
    """Let `inbox` deliver for real up to the LMTP client: what Dovecot would get is recorded."""

    async def deliver(sender: str, message: Spooled) -> Reply:
        delivered.append(b"".join(message.pieces()))
        return Reply(250, "2.0.0 stored")

    inbox._deliver = deliver
    inbox._vet = lambda key, envelope, header: Verdict("pass", "test")
    return inbox


def zlib_payload() -> bytes:
    payload = encode_payload(wire.Envelope("a@b.example", ("c@d.example",), len(TEXT)), TEXT, compress=True)
    assert b'"encoding":"zlib"' in payload[:200] and len(payload) < len(TEXT) / 3
    return payload


def finish(inbox, eve: Friend, data: bytes, node: Node) -> None:
    async def run() -> None:
        number = eve.offer(data)
        start = next((p for f, n, p in node.seeks if n == number), 0)
        for at in range(start, len(data), 1371):
            inbox.on_chunk(MAIL_PEER, number, at, data[at : at + 1371])
        inbox.on_chunk(MAIL_PEER, number, len(data), b"")
        await asyncio.gather(*inbox._tasks)

    asyncio.run(run())


@pytest.mark.parametrize("restart", [False, True])
def test_compressed_mail_resumes_over_wire_bytes_and_arrives_inflated(tmp_path, restart):
    node, delivered = Node(), cast(list[bytes], [])
    inbox = with_delivery(receiver(tmp_path, node), delivered)
    eve = Friend(inbox, node, MAIL_PEER)
    data = zlib_payload()
    eve.send_and_cancel(data, share=0.3)
    eve.send_and_cancel(data, share=0.6)
    if restart:  # a new run: the partial file is read and inflated once more to go on
        inbox = with_delivery(receiver(tmp_path, node), delivered)
        inbox._partials.scan()
        eve = Friend(inbox, node, MAIL_PEER)
        eve.number = 10
    finish(inbox, eve, data, node)
    # offsets count the bytes on the wire (the compressed ones), where the last attempt stopped
    assert [p for _, _, p in node.seeks][-1] == int(len(data) * 0.6)
    assert len(delivered) == 1 and delivered[0].endswith(TEXT[TEXT.index(b"\r\n\r\n") :])
    assert b"Subject: zlib\r\n" in delivered[0]
    assert [r.code for _, _, r in node.answers] == [250]
    assert not list((tmp_path / "partial").glob("*/*")), "a partial or inflated file was left"


@pytest.mark.parametrize("claimed", [10 * CAP, 1000])  # the household's limit; a small claim
def test_zlib_bomb_is_refused_552_nothing_stored_partial_dropped(tmp_path, claimed):
    node, delivered = Node(), cast(list[bytes], [])
    inbox = with_delivery(receiver(tmp_path, node), delivered)
    eve = Friend(inbox, node, MAIL_PEER)
    bomb = forged_zlib_payload("a@b.example", "c@d.example", claimed, zlib.compress(bytes(20 * CAP), 9))
    assert len(bomb) < 32 * KIB  # a small transfer: 20 MiB of zeros
    number = eve.offer(bomb)
    assert eve.accepted(number)
    for at in range(0, len(bomb), 1371):
        inbox.on_chunk(MAIL_PEER, number, at, bomb[at : at + 1371])
        if (MAIL_PEER, number, FILE_CONTROL_CANCEL) in node.controls:
            break
    assert (MAIL_PEER, number, FILE_CONTROL_CANCEL) in node.controls
    ((_, file_id, reply),) = node.answers
    assert file_id == wire.file_id_of(bomb) and (reply.code, reply.text[:5]) == (552, "5.3.4"), reply
    assert not delivered and not inbox._tasks
    assert not list(Path(tmp_path / "partial").glob("*/*")), "the bomb's partial file was kept"


class SendingNode:
    """What Sender asks of a ToxNode: the offers it makes."""

    def __init__(self) -> None:
        self.offers: list[tuple[int, int, bytes]] = []  # friend, size, file_id

    def friend_connection(self, friend: int) -> int:
        return 2

    def file_send(self, friend: int, kind: int, size: int, file_id: bytes, filename: bytes) -> int:
        self.offers.append((friend, size, file_id))
        return len(self.offers)

    def file_control(self, friend: int, number: int, control: int) -> None:
        pass

    def friend_label(self, friend: int) -> str:
        return f"#{friend}"


@pytest.mark.parametrize("size", [30_000, 3 * (1 << 20)])  # on the loop; in a worker thread
def test_sender_compresses_only_for_a_friend_whose_bridge_inflates(size):
    message = (TEXT * (size // len(TEXT) + 1))[:size]
    envelope = wire.Envelope("a@b.example", ("c@d.example",), len(message))
    node = SendingNode()
    sender = Sender(cast(ToxNode, node), 30, 30, compress_for=lambda friend: friend == 1)

    async def send_to(friend: int) -> int:
        task = asyncio.create_task(sender.send(friend, envelope, (message,)))
        while not task.done() and len(node.offers) < friend:
            await asyncio.sleep(0.01)
        _, offered, file_id = node.offers[-1]
        sender.on_result(friend, wire.encode_result(file_id, [Reply(250, "2.0.0 ok")]))
        assert [r.code for r in await task] == [250]
        return offered

    async def both() -> tuple[int, int]:
        return await send_to(1), await send_to(2)

    compressed, raw = asyncio.run(both())
    assert compressed < len(message) / 3
    assert raw == len(encode_payload(envelope, message))


@pytest.mark.parametrize("first", ["zlib", "raw"])
def test_a_retry_in_the_other_encoding_is_answered_from_the_record(tmp_path, first):
    """The sender decides per attempt: after its restart it may retry before it has heard that
    we inflate (the catch-up push follows the greeting at once), so the same mail comes raw after
    it came compressed, or the other way round. Delivered once, the second answered as a repeat.
    (Failed before the receiver knew the raw file_id of a compressed mail: two deliveries.)"""
    node, delivered = Node(), cast(list[bytes], [])
    inbox = with_delivery(receiver(tmp_path, node), delivered)
    eve = Friend(inbox, node, MAIL_PEER)
    envelope = wire.Envelope("a@b.example", ("c@d.example",), len(TEXT))
    zlib_data, raw_data = zlib_payload(), encode_payload(envelope, TEXT)
    assert b'"encoding"' not in raw_data[:200]
    for data in (zlib_data, raw_data) if first == "zlib" else (raw_data, zlib_data):
        finish(inbox, eve, data, node)
    assert len(delivered) == 1
    assert [r.code for _, _, r in node.answers] == [250, 250]
    assert not list((tmp_path / "partial").glob("*/*")), "a partial or inflated file was left"
