"""Partial files cannot fill the disk (issue 15.9): a friend that offers mails and cancels them
near the end, again and again, keeps at most its cap of partial bytes; a new offer that does not
fit is refused 4.3.1 (the sender's Postfix retries), never silently lost; a re-offer resumes
without reading the partial file again. Unit tests with a fake node: no Tox needed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import cast

import pytest
from payloads import encode_payload

from toxbridge.mail.smtpreply import Reply
from toxbridge.tox import partial as partial_mod
from toxbridge.tox import wire
from toxbridge.tox.delivered import DeliveryStore
from toxbridge.tox.incoming import Deliver, Receiver, Vet
from toxbridge.tox.library import FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME, FILE_KIND_DATA
from toxbridge.tox.node import ToxNode
from toxbridge.tox.partial import Partials

KIB = 1024
SIZE = 200 * KIB  # one mail's payload, roughly
CAP = 1024 * KIB  # per friend
MAIL_PEER, OTHER_PEER = 0, 1


class Node:
    """What the receiver asks of a ToxNode, recorded: the offers' file_ids, answers, controls."""

    def __init__(self) -> None:
        self.ids: dict[tuple[int, int], bytes] = {}
        self.answers: list[tuple[int, bytes, Reply]] = []
        self.controls: list[tuple[int, int, int]] = []
        self.seeks: list[tuple[int, int, int]] = []

    def file_id(self, friend: int, number: int) -> bytes:
        return self.ids[(friend, number)]

    def friend_public_key(self, friend: int) -> bytes:
        return bytes([friend + 1]) * 32

    def friend_label(self, friend: int) -> str:
        return f"#{friend}"

    def file_control(self, friend: int, number: int, control: int) -> None:
        self.controls.append((friend, number, control))

    def file_seek(self, friend: int, number: int, position: int) -> None:
        self.seeks.append((friend, number, position))

    def send_lossless_packet(self, friend: int, data: bytes) -> None:
        file_id, replies = wire.decode_result(data)
        self.answers.append((friend, file_id, replies[0]))


def payload(size: int = SIZE) -> bytes:
    body = b"Subject: x\r\n\r\n" + os.urandom(size // 2).hex().encode()[: size - 14]
    return encode_payload(wire.Envelope("a@b.example", ("c@d.example",), len(body)), body)


class Friend:
    """One friend's side of the transfers: offers a payload, sends a share of it, cancels."""

    def __init__(self, inbox: Receiver, node: Node, friend: int) -> None:
        self.inbox, self.node, self.friend, self.number = inbox, node, friend, 0

    def offer(self, data: bytes) -> int:
        self.number += 1
        self.node.ids[(self.friend, self.number)] = wire.file_id_of(data)
        self.inbox.on_file_recv(self.friend, self.number, FILE_KIND_DATA, len(data), wire.MAIL_FILENAME)
        return self.number

    def accepted(self, number: int) -> bool:
        return (self.friend, number, FILE_CONTROL_RESUME) in self.node.controls

    def send_and_cancel(self, data: bytes, share: float = 0.9) -> int:
        number = self.offer(data)
        if self.accepted(number):
            start = next((p for f, n, p in self.node.seeks if (f, n) == (self.friend, number)), 0)
            end = int(len(data) * share)
            for at in range(start, end, 16 * KIB):
                self.inbox.on_chunk(self.friend, number, at, data[at : min(at + 16 * KIB, end)])
            self.inbox.on_control(self.friend, number, FILE_CONTROL_CANCEL)
        return number


def partial_bytes(root: Path, peer: int | None = None) -> int:
    prefix = "" if peer is None else bytes([peer + 1]).hex() * 32
    return sum(p.stat().st_size for p in root.glob(f"*/{prefix}*"))


def receiver(
    tmp_path: Path, node: Node, per_friend: int = CAP, total: int = 4 * CAP, min_free: int = 0
) -> Receiver:
    root = tmp_path / "partial"
    (root / "mb").mkdir(parents=True, exist_ok=True)
    partials = Partials(root, per_friend, total, min_free)
    return Receiver(
        cast(ToxNode, node),
        10 * CAP,
        "h",
        "mb",
        "c@d.example",
        cast(Deliver, None),
        DeliveryStore(tmp_path / "delivered.sqlite", 86400),
        root / "mb",
        cast(Vet, None),
        partials=partials,
    )


def test_offers_cancelled_near_the_end_keep_at_most_the_friends_cap(tmp_path):
    """The attack: 20 offers cancelled at 90 % left 20 × 180 KiB on disk; the cap is 1 MiB."""
    node = Node()
    eve = Friend(receiver(tmp_path, node), node, MAIL_PEER)
    for _ in range(20):
        eve.send_and_cancel(payload())
    assert partial_bytes(tmp_path / "partial", MAIL_PEER) <= CAP
    # the oldest partials made room for the newer ones: every offer was taken, none refused
    assert all(r.code < 400 for _, _, r in node.answers), node.answers


def test_one_friend_cannot_take_the_room_of_the_others(tmp_path):
    """The total cap: each friend's partials stay, while the offer that does not fit is refused
    with 4.3.1, or makes room by dropping the oldest of its own."""
    node = Node()
    inbox = receiver(tmp_path, node, per_friend=CAP, total=CAP + CAP // 2)
    eve, bob = Friend(inbox, node, MAIL_PEER), Friend(inbox, node, OTHER_PEER)
    for _ in range(10):
        eve.send_and_cancel(payload())
    bob.send_and_cancel(payload())
    bobs = partial_bytes(tmp_path / "partial", OTHER_PEER)
    assert bobs > 0, "bob's offer was refused although eve had more than her share"
    for _ in range(10):
        eve.send_and_cancel(payload())
    assert partial_bytes(tmp_path / "partial", OTHER_PEER) == bobs, "eve's offers dropped bob's partial"
    assert partial_bytes(tmp_path / "partial") <= CAP + CAP // 2


def test_an_offer_that_cannot_fit_is_refused_with_4xx(tmp_path):
    """Transfers still arriving keep their room: a friend with its cap taken by running
    transfers gets 452 4.3.1 for the next one, and Postfix retries it."""
    node = Node()
    eve = Friend(receiver(tmp_path, node, per_friend=2 * SIZE + 2 * 4096), node, MAIL_PEER)
    first, second, third = payload(), payload(), payload()
    assert eve.accepted(eve.offer(first)) and eve.accepted(eve.offer(second))
    number = eve.offer(third)
    assert not eve.accepted(number)
    assert (MAIL_PEER, number, FILE_CONTROL_CANCEL) in node.controls
    _, file_id, reply = node.answers[-1]
    assert file_id == wire.file_id_of(third) and reply.code == 452 and reply.text.startswith("4.3.1")


def test_too_little_free_space_refuses_the_offer(tmp_path, monkeypatch):
    node = Node()
    inbox = receiver(tmp_path, node, min_free=10**15)  # more than any test machine has free
    eve = Friend(inbox, node, MAIL_PEER)
    number = eve.offer(payload())
    assert not eve.accepted(number)
    assert node.answers[-1][2].code == 452 and partial_bytes(tmp_path / "partial") == 0


def test_a_re_offer_resumes_without_reading_the_partial_again(tmp_path, monkeypatch):
    """The hash state of a cancelled transfer stays in memory while the bridge runs: resuming
    does not re-read and re-hash the file inside the toxcore callback."""
    node = Node()
    eve = Friend(receiver(tmp_path, node), node, MAIL_PEER)
    data = payload()
    eve.send_and_cancel(data, share=0.5)

    def no_reading(*args, **kwargs):
        raise AssertionError("the partial file was read again")

    monkeypatch.setattr(partial_mod.Incoming, "take", no_reading)
    number = eve.offer(data)
    assert eve.accepted(number) and (MAIL_PEER, number, len(data) // 2) in node.seeks


@pytest.mark.parametrize("share", [0.3, 0.999])
def test_a_resumed_transfer_completes_with_the_right_hash(tmp_path, share):
    node = Node()
    delivered: list[bytes] = []

    inbox = receiver(tmp_path, node)
    eve = Friend(inbox, node, MAIL_PEER)
    data = payload()
    eve.send_and_cancel(data, share=share)
    eve.send_and_cancel(data, share=share + (1 - share) / 2)

    async def finish() -> None:
        number = eve.offer(data)
        start = node.seeks[-1][2]
        inbox.on_chunk(MAIL_PEER, number, start, data[start:])
        inbox._deliver_and_answer = deliver  # type: ignore[method-assign]  # delivery itself is not under test
        inbox.on_chunk(MAIL_PEER, number, len(data), b"")
        await asyncio.gather(*inbox._tasks)

    async def deliver(inc, envelope) -> None:
        delivered.append(inc.path.read_bytes())

    asyncio.run(finish())
    assert delivered == [data]
    assert not [r for _, _, r in node.answers if r.code >= 400], node.answers
