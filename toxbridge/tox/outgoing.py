"""Sending one mail to one friend over Tox and waiting for the truth from the far end.

A mail is one file transfer (file_id = SHA-256 of the payload). The answer is the peer bridge's
result packet, sent after its Dovecot answered. Anything else — friend offline, the transfer
cancelled or stalled, no answer in time — is a 4.4.1: Postfix keeps the mail and retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..mail.smtpreply import Reply
from . import wire
from .errors import ToxError, ToxSendQueueFull
from .library import FILE_CONTROL_CANCEL, FILE_KIND_DATA
from .node import ToxNode
from .pacing import GONE, LATER, RETRY, SENT, Pacer

log = logging.getLogger("toxbridge.sender")

# A mail bigger than this is compressed in a worker thread: zlib's default level makes 24 MiB/s
# of English text here (docs/benchmarks.md, "Levers"), so 64 KiB hold the loop up ~3 ms, while
# every transfer of the bridge waits for its next iteration.
COMPRESS_ON_LOOP = 64 * 1024


def offline(detail: str) -> Reply:
    return Reply(451, f"4.4.1 {detail}; Postfix will retry")


@dataclass(eq=False)
class Outgoing:
    friend: int
    file_number: int
    file_id: bytes
    payload: wire.Payload
    recipients: int
    result: asyncio.Future
    last_progress: float = field(default_factory=time.monotonic)
    sent_all_at: float | None = None
    served: int = 0  # bytes handed to toxcore so far
    # Unpaced: chunks toxcore asked for but could not take yet (SENDQ), in order.
    waiting: deque[tuple[int, int]] = field(default_factory=deque)


class Sender:
    """Outgoing transfers of one Tox identity."""

    def __init__(
        self,
        node: ToxNode,
        stall_timeout: float,
        result_timeout: float,
        compress_for: Callable[[int], bool] = lambda friend: False,
        pacer: Pacer | None = None,
    ) -> None:
        self._node = node
        self._pacer = pacer  # None: every chunk goes the moment toxcore asks for it
        self._compress_for = compress_for  # friend -> does its bridge inflate zlib?
        self._stall_timeout = stall_timeout
        self._result_timeout = result_timeout
        self._by_number: dict[tuple[int, int], Outgoing] = {}
        self._by_id: dict[tuple[int, bytes], Outgoing] = {}

    async def send(self, friend: int, envelope: wire.Envelope, message: tuple) -> list[Reply]:
        """Carry the mail (given as pieces) to `friend`; one reply per envelope recipient."""
        compress = self._compress_for(friend)
        if compress and envelope.size > COMPRESS_ON_LOOP:
            payload = await asyncio.to_thread(wire.payload_of, envelope, *message, compress=True)
        else:
            payload = wire.payload_of(envelope, *message, compress=compress)
        file_id = payload.file_id
        count = len(envelope.recipients)
        same = self._by_id.get((friend, file_id))
        if same is not None:  # the same mail is already on its way: share its outcome
            return await asyncio.shield(same.result)
        if self._node.friend_connection(friend) == 0:
            return [offline("recipient's Tox friend is offline")] * count
        try:
            number = self._node.file_send(friend, FILE_KIND_DATA, len(payload), file_id, wire.MAIL_FILENAME)
        except ToxError as e:
            return [offline(f"cannot start the Tox transfer ({e})")] * count
        out = Outgoing(friend, number, file_id, payload, count, asyncio.get_running_loop().create_future())
        self._by_number[(friend, number)] = out
        self._by_id[(friend, file_id)] = out
        try:
            return await self._wait(out)
        except (
            asyncio.CancelledError
        ):  # the bridge is stopping: the friend's partial file stays for the retry
            self._cancel(out)
            raise
        finally:
            self._forget(out)

    async def _wait(self, out: Outgoing) -> list[Reply]:
        while not out.result.done():
            now = time.monotonic()
            if out.sent_all_at is None:
                deadline, why = out.last_progress + self._stall_timeout, "the Tox transfer stalled"
            else:
                deadline, why = out.sent_all_at + self._result_timeout, "no answer from the peer bridge"
            if now >= deadline:
                self._cancel(out)
                return [offline(why)] * out.recipients
            await asyncio.wait([out.result], timeout=deadline - now)
        # An answer before the last byte is a refusal, and the refusing receiver cancels the
        # transfer itself; cancelling here too raced with toxcore reusing the file number.
        return out.result.result()

    def _finish(self, out: Outgoing, replies: list[Reply]) -> None:
        if not out.result.done():
            out.result.set_result(replies)

    def _cancel(self, out: Outgoing) -> None:
        """Stop a transfer that is still running. Never one whose bytes were all handed over:
        toxcore ends it by itself, and a cancel that reaches the peer after it finished comes
        back as toxcore's "no such transfer" kill, which then hits the next transfer on the
        same file number (seen in a burst: both mails failed, one waited for result_timeout)."""
        if out.sent_all_at is not None or out.served >= len(out.payload):
            return
        try:
            self._node.file_control(out.friend, out.file_number, FILE_CONTROL_CANCEL)
        except ToxError:
            pass  # already gone on toxcore's side

    def _forget(self, out: Outgoing) -> None:
        # toxcore reuses a file number once its transfer ends: drop only our own entries.
        by_number, by_id = (out.friend, out.file_number), (out.friend, out.file_id)
        if self._by_number.get(by_number) is out:
            del self._by_number[by_number]
        if self._by_id.get(by_id) is out:
            del self._by_id[by_id]

    # ---- toxcore events, called on the loop thread from the identity's handler

    def on_chunk_request(self, friend: int, number: int, position: int, length: int) -> None:
        out = self._by_number.get((friend, number))
        if out is None:
            return
        out.last_progress = time.monotonic()
        if length == 0:  # all sent; toxcore ends the transfer and may reuse its number
            out.sent_all_at = out.last_progress
            del self._by_number[(friend, number)]
            return
        if self._pacer is None:
            self._send_until_taken(out, position, length)
        else:
            # toxcore has counted the chunk as requested and asks for the next ones: it never
            # asks for this one again, so it waits its turn here and goes in order.
            self._pacer.submit(out, length, lambda: self._send_chunk(out, position, length))

    def _send_until_taken(self, out: Outgoing, position: int, length: int) -> None:
        """toxcore asks for each chunk once and takes them only in order (Messenger.c): one it
        cannot take yet (its send queue full) is offered again a moment later, and the chunks
        asked for meanwhile wait behind it, instead of the transfer stalling."""
        out.waiting.append((position, length))
        if len(out.waiting) == 1:
            self._send_waiting(out)

    def _send_waiting(self, out: Outgoing) -> None:
        while out.waiting:
            outcome = self._send_chunk(out, *out.waiting[0])
            if outcome == LATER:
                asyncio.get_running_loop().call_later(RETRY, self._send_waiting, out)
                return
            out.waiting.popleft()
            if outcome == GONE:
                out.waiting.clear()

    def _send_chunk(self, out: Outgoing, position: int, length: int) -> str:
        if self._by_number.get((out.friend, out.file_number)) is not out:
            return GONE  # cancelled or broken while its chunk waited for the pace
        chunk = out.payload.chunk(position, length)
        try:
            self._node.file_send_chunk(out.friend, out.file_number, position, chunk)
        except ToxSendQueueFull:
            # toxcore's packet budget is spent for now (it asks for chunks only while it has
            # some, but a paced chunk goes later): the same chunk again, once it refilled.
            return LATER
        except ToxError as e:
            log.debug("chunk at %d for friend %d not sent: %s", position, out.friend, e)
            return GONE
        out.served = max(out.served, position + len(chunk))
        out.last_progress = time.monotonic()
        return SENT

    def on_control(self, friend: int, number: int, control: int) -> None:
        out = self._by_number.get((friend, number))
        if out is not None:
            out.last_progress = time.monotonic()
            if control == FILE_CONTROL_CANCEL:
                # A refusal comes with a result packet first (packets stay in order);
                # a bare cancel means the peer gave up without an answer.
                del self._by_number[(friend, number)]
                self._finish(out, [offline("the peer cancelled the Tox transfer")] * out.recipients)

    def on_result(self, friend: int, packet: bytes) -> None:
        try:
            file_id, replies = wire.decode_result(packet)
        except wire.WireError as e:
            log.warning("friend %s sent a malformed result packet: %s", self._node.friend_label(friend), e)
            return
        out = self._by_id.get((friend, file_id))
        if out is None:
            log.info(
                "friend %s answered for a mail no longer waiting (late or repeated answer)",
                self._node.friend_label(friend),
            )
            return
        if len(replies) == 1:
            replies = replies * out.recipients
        elif len(replies) != out.recipients:
            log.warning(
                "friend %s answered %d replies for %d recipients",
                self._node.friend_label(friend),
                len(replies),
                out.recipients,
            )
            replies = [
                offline("the peer bridge answered for the wrong number of recipients")
            ] * out.recipients
        self._finish(out, replies)

    def on_friend_offline(self, friend: int) -> None:
        """Every transfer dies with the friend's connection (toxcore gives no callback for it)."""
        for out in [o for o in self._by_id.values() if o.friend == friend]:
            self._forget(out)
            self._finish(out, [offline("the Tox link to the peer broke")] * out.recipients)
