"""A partial transfer file picked up again (no Tox needed)."""

from __future__ import annotations

import hashlib
from typing import cast

from payloads import encode_payload

from toxbridge.tox import wire
from toxbridge.tox.partial import Incoming, Partials

MESSAGE = b"Subject: resume\r\n\r\n" + b"x" * 5000
PAYLOAD = encode_payload(wire.Envelope("a@b.example", ("c@d.example",), len(MESSAGE)), MESSAGE)


def incoming(tmp_path, kept: bytes) -> Incoming:
    path = tmp_path / "partial"
    path.write_bytes(kept)
    return Incoming(0, 1, wire.file_id_of(PAYLOAD), len(PAYLOAD), path, wire.PayloadParser(10**6))


def finish(inc: Incoming, resume_at: int) -> None:
    assert inc.file is not None, "open() first"
    inc.file.write(PAYLOAD[resume_at:])
    inc.take(PAYLOAD[resume_at:])
    inc.close()


def test_a_broken_transfer_resumes_where_it_stopped(tmp_path):
    inc = incoming(tmp_path, PAYLOAD[:3000])
    assert inc.open() == 3000
    finish(inc, 3000)
    assert inc.hasher.digest() == inc.file_id and inc.path.read_bytes() == PAYLOAD
    assert inc.parser.finish().size == len(MESSAGE)


def test_a_complete_file_left_by_a_killed_bridge_resumes_one_byte_before_the_end(tmp_path):
    """toxcore cannot seek to the end of a file: the last byte comes again."""
    inc = incoming(tmp_path, PAYLOAD)
    assert inc.open() == len(PAYLOAD) - 1
    finish(inc, len(PAYLOAD) - 1)
    assert inc.hasher.digest() == hashlib.sha256(PAYLOAD).digest() and inc.path.read_bytes() == PAYLOAD


def test_a_file_that_is_not_a_payload_starts_over(tmp_path):
    inc = incoming(tmp_path, b"garbage that is no toxbridge payload")
    assert inc.open() == 0
    finish(inc, 0)
    assert inc.hasher.digest() == inc.file_id


def test_an_answer_that_meets_a_full_send_queue_is_tried_again(tmp_path, monkeypatch):
    import asyncio

    from toxbridge.mail.smtpreply import Reply
    from toxbridge.tox import incoming as receiver_mod
    from toxbridge.tox.delivered import DeliveryStore
    from toxbridge.tox.errors import ToxSendQueueFull
    from toxbridge.tox.incoming import Deliver, Receiver, Vet

    monkeypatch.setattr(receiver_mod, "ANSWER_RETRY_SECONDS", 0.001)

    class Node:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0
            self.sent: list[bytes] = []

        def send_lossless_packet(self, friend, data):
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise ToxSendQueueFull("tox_friend_send_lossless_packet: SENDQ")
            self.sent.append(data)

        def friend_public_key(self, friend):
            return bytes(32)

        def friend_label(self, friend):
            return f"#{friend}"

    async def answer(node) -> None:
        # answering uses none of deliver, store, vet
        inbox = Receiver(
            node,
            1000,
            "h",
            "mb",
            "a@b.example",
            cast(Deliver, None),
            cast(DeliveryStore, None),
            tmp_path,
            cast(Vet, None),
            partials=Partials(tmp_path, 1 << 30, 1 << 30, 0),
        )
        inbox._answer(0, bytes(32), Reply(250, "2.0.0 ok"))
        while not node.sent and node.calls < 1 + receiver_mod.ANSWER_RETRIES:
            await asyncio.sleep(0.001)  # the retries are timers on this loop
        await asyncio.sleep(0.01)  # room for a try too many, which the asserts would see

    patient = Node(failures=3)
    asyncio.run(answer(patient))
    assert patient.sent == [wire.encode_result(bytes(32), [Reply(250, "2.0.0 ok")])]
    hopeless = Node(failures=100)
    asyncio.run(answer(hopeless))
    assert hopeless.sent == [] and hopeless.failures == 100 - 1 - receiver_mod.ANSWER_RETRIES
