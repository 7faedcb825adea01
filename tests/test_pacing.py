"""The pacer of file chunks (tox/pacing.py): the token bucket's arithmetic, the order and the
turns it keeps, and the Sender handing toxcore its chunks through it, in order, at its rate."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from toxbridge.mail.smtpreply import Reply
from toxbridge.tox import wire
from toxbridge.tox.errors import ToxSendQueueFull
from toxbridge.tox.library import FILE_CHUNK_SIZE as CHUNK
from toxbridge.tox.node import ToxNode
from toxbridge.tox.outgoing import Sender
from toxbridge.tox.pacing import (
    BURST_CHUNKS,
    GONE,
    LATER,
    PACKET_OVERHEAD,
    SENT,
    Pacer,
    TokenBucket,
    bucket_for,
)


def test_bucket_starts_full_then_waits_for_exactly_the_missing_bytes():
    bucket = TokenBucket(rate=1000, burst=3000)
    assert bucket.wait(3000, now=10.0) == 0
    bucket.take(3000, now=10.0)
    assert bucket.wait(500, now=10.0) == pytest.approx(0.5)
    assert bucket.wait(500, now=10.2) == pytest.approx(0.3)  # 200 bytes came back meanwhile
    assert bucket.wait(500, now=10.5) == 0


def test_bucket_saves_up_no_more_than_its_burst():
    bucket = TokenBucket(rate=1000, burst=3000)
    bucket.take(3000, now=0.0)
    assert bucket.wait(3000, now=100.0) == 0  # idle for long: full, not 100,000 bytes
    bucket.take(3000, now=100.0)
    assert bucket.wait(1, now=100.0) == pytest.approx(0.001)


def test_bucket_lets_a_cost_above_its_burst_go_once_full_and_owes_the_rest():
    bucket = TokenBucket(rate=1000, burst=1000)
    assert bucket.wait(5000, now=0.0) == 0
    bucket.take(5000, now=0.0)
    assert bucket.wait(1000, now=0.0) == pytest.approx(5.0)  # the 4000 owed plus a full bucket


def test_bucket_ignores_a_clock_going_back():
    bucket = TokenBucket(rate=1000, burst=1000)
    bucket.take(1000, now=5.0)
    assert bucket.wait(1000, now=4.0) == pytest.approx(1.0)
    assert bucket.wait(1000, now=5.5) == pytest.approx(0.5)


def test_bucket_refuses_a_rate_of_nothing():
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


def test_bucket_for_kbit_counts_bits_per_second_and_a_burst_of_chunks():
    bucket = bucket_for(4000)
    assert bucket.rate == 500_000
    assert bucket.burst == BURST_CHUNKS * (CHUNK + PACKET_OVERHEAD)


def test_pacer_keeps_the_rate_over_a_long_run():
    async def main() -> float:
        loop = asyncio.get_running_loop()
        rate = 2_000_000.0  # bytes/s: 2000 chunks take about a second and a half
        pacer = Pacer(TokenBucket(rate, 4 * (CHUNK + PACKET_OVERHEAD)))
        sent: list[float] = []
        done = loop.create_future()
        count = 2000

        def send() -> str:
            sent.append(loop.time())
            if len(sent) == count:
                done.set_result(None)
            return SENT

        start = loop.time()
        for _ in range(count):
            pacer.submit("t", CHUNK, send)
        await asyncio.wait_for(done, 30)
        cost = count * (CHUNK + PACKET_OVERHEAD) - 4 * (CHUNK + PACKET_OVERHEAD)  # less the burst
        return (sent[-1] - start) / (cost / rate)

    # not faster than the rate (timers never fire early); slower only by the loop's lateness
    assert 1.0 <= asyncio.run(main()) < 3.0


def test_pacer_sends_each_transfer_in_order_and_lets_transfers_take_turns():
    async def main() -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(TokenBucket(1e6, CHUNK + PACKET_OVERHEAD))  # one chunk at a time
        sent: list[tuple[str, int]] = []
        done = loop.create_future()

        def sender(key: str, i: int):
            def send() -> str:
                sent.append((key, i))
                if len(sent) == 9:
                    done.set_result(None)
                return SENT

            return send

        for i in range(6):
            pacer.submit("big", CHUNK, sender("big", i))
        for i in range(3):
            pacer.submit("small", CHUNK, sender("small", i))
        await asyncio.wait_for(done, 10)
        return sent

    sent = asyncio.run(main())
    assert [i for k, i in sent if k == "big"] == list(range(6))
    assert [i for k, i in sent if k == "small"] == list(range(3))
    # the small mail queued behind six chunks of the big one does not wait for all of them
    assert sent.index(("small", 2)) < sent.index(("big", 5))


def test_a_send_whose_transfer_is_gone_costs_nothing():
    clock = [0.0]
    pacer = Pacer(TokenBucket(1000, 1000), clock=lambda: clock[0])
    sent: list[str] = []

    def live() -> str:
        sent.append("live")
        return SENT

    pacer.submit("gone", 900 - PACKET_OVERHEAD, lambda: GONE)
    pacer.submit("live", 900 - PACKET_OVERHEAD, live)
    # the gone transfer's 900 bytes were not spent: the live one fits in the same 1000 at once
    # (charged, it would have to wait, and its timer would need a running loop)
    assert sent == ["live"] and len(pacer) == 0


def test_a_send_toxcore_cannot_take_yet_is_tried_again_first_and_costs_nothing():
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(TokenBucket(1e6, 2 * (CHUNK + PACKET_OVERHEAD)))
        attempts: list[str] = []
        done = loop.create_future()

        def first() -> str:
            attempts.append("first")
            return LATER if attempts.count("first") < 3 else SENT

        def second() -> str:
            attempts.append("second")
            done.set_result(None)
            return SENT

        pacer.submit("t", CHUNK, first)
        pacer.submit("t", CHUNK, second)
        await asyncio.wait_for(done, 10)
        return attempts

    # refused twice, then sent, and only then the next one of the same transfer
    assert asyncio.run(main()) == ["first", "first", "first", "second"]


def test_a_transfer_toxcore_cannot_take_yet_does_not_hold_up_the_other_transfers():
    """SENDQ is one friend's connection being full; a chunk for another friend can go meanwhile
    (the pacer is one per bridge: else a slow friend's link would set every friend's pace)."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(TokenBucket(1e6, 4 * (CHUNK + PACKET_OVERHEAD)))
        attempts: list[str] = []
        done = loop.create_future()
        full = [True]  # the slow friend's connection

        def slow() -> str:
            attempts.append("slow refused" if full[0] else "slow sent")
            return LATER if full[0] else SENT

        def other(i: int):
            def send() -> str:
                attempts.append(f"other{i}")
                if i == 2:
                    full[0] = False
                if i == 3:
                    done.set_result(None)
                return SENT

            return send

        pacer.submit("slow friend", CHUNK, slow)
        for i in range(4):
            pacer.submit("other friend", CHUNK, other(i))
        await asyncio.wait_for(done, 10)
        return attempts

    attempts = asyncio.run(main())
    # refused, the slow chunk stepped aside: the other friend's chunks went meanwhile, in their
    # order, and the slow one went as soon as its connection had room (before: the slow
    # friend's chunk was retried alone, and the others waited for as long as it was refused)
    assert [a for a in attempts if a.startswith("other")] == ["other0", "other1", "other2", "other3"]
    assert attempts.index("slow sent") == attempts.index("other2") + 1


class ChunkNode:
    """What Sender asks of a ToxNode, recording the chunks it is handed; `refuse` times it
    answers SENDQ first, as toxcore does when its packet budget is spent."""

    def __init__(self, refuse: int = 0) -> None:
        self.chunks: list[tuple[int, bytes]] = []
        self.refuse = refuse

    def friend_connection(self, friend: int) -> int:
        return 2

    def file_send(self, friend: int, kind: int, size: int, file_id: bytes, filename: bytes) -> int:
        return 0

    def file_send_chunk(self, friend: int, number: int, position: int, data: bytes) -> None:
        if self.refuse and self.chunks:
            self.refuse -= 1
            raise ToxSendQueueFull("tox_file_send_chunk: SENDQ", code_name="SENDQ")
        self.chunks.append((position, data))

    def file_control(self, friend: int, number: int, control: int) -> None:
        pass

    def friend_label(self, friend: int) -> str:
        return f"#{friend}"


@pytest.mark.parametrize("refuse", [0, 5])
def test_sender_hands_toxcore_the_chunks_in_order_at_the_paced_rate(refuse):
    message = bytes(range(256)) * 200  # 51,200 bytes: 38 chunks
    envelope = wire.Envelope("a@b.example", ("c@d.example",), len(message))

    async def main() -> tuple[bytes, bytes, float, list[float]]:
        loop = asyncio.get_running_loop()
        node = ChunkNode(refuse)
        rate = 200_000.0  # bytes/s: the mail takes about a quarter of a second
        sender = Sender(cast(ToxNode, node), 30, 30, pacer=Pacer(TokenBucket(rate, CHUNK + PACKET_OVERHEAD)))
        task = asyncio.create_task(sender.send(1, envelope, (message,)))
        await asyncio.sleep(0)
        out = next(iter(sender._by_number.values()))
        start = loop.time()
        position = 0
        while position < len(out.payload):  # toxcore asks for everything at once
            length = min(CHUNK, len(out.payload) - position)
            sender.on_chunk_request(1, 0, position, length)
            position += length
        asked_all = len(node.chunks)
        while len(node.chunks) * CHUNK < len(out.payload):
            await asyncio.sleep(0.01)
        took = loop.time() - start
        sender.on_chunk_request(1, 0, position, 0)
        sender.on_result(1, wire.encode_result(out.file_id, [Reply(250, "2.0.0 ok")]))
        assert [r.code for r in await task] == [250]
        sent = b"".join(data for _, data in node.chunks)
        expected = out.payload.chunk(0, len(out.payload))
        return sent, expected, took, [asked_all, (len(out.payload) + 37 * PACKET_OVERHEAD) / rate]

    sent, expected, took, (asked_all, paced) = asyncio.run(main())
    assert sent == expected  # every byte, in order, once
    assert asked_all == 1  # only the first chunk went at once: the rest waited for the pace
    assert took >= paced * 0.9


def test_unpaced_a_chunk_toxcore_cannot_take_yet_goes_again_and_the_next_wait_behind_it():
    """toxcore asks for each chunk once and takes them only in order: a SENDQ answer used to
    lose the chunk, and the transfer stalled until transfer_stall_timeout."""
    message = bytes(range(256)) * 40  # 10,240 bytes: 8 chunks
    envelope = wire.Envelope("a@b.example", ("c@d.example",), len(message))

    async def main() -> tuple[bytes, bytes]:
        node = ChunkNode(refuse=3)
        sender = Sender(cast(ToxNode, node), 30, 30)
        task = asyncio.create_task(sender.send(1, envelope, (message,)))
        await asyncio.sleep(0)
        out = next(iter(sender._by_number.values()))
        position = 0
        while position < len(out.payload):  # asked for at once; the second is refused 3 times
            length = min(CHUNK, len(out.payload) - position)
            sender.on_chunk_request(1, 0, position, length)
            position += length
        async with asyncio.timeout(5):
            while sum(len(data) for _, data in node.chunks) < len(out.payload):
                await asyncio.sleep(0.001)
        sender.on_chunk_request(1, 0, position, 0)
        sender.on_result(1, wire.encode_result(out.file_id, [Reply(250, "2.0.0 ok")]))
        assert [r.code for r in await task] == [250]
        return b"".join(data for _, data in node.chunks), out.payload.chunk(0, len(out.payload))

    sent, expected = asyncio.run(main())
    assert sent == expected  # every byte, in order, once
