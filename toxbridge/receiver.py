"""Receiving mail from a Tox friend and handing it to the household's Dovecot.

The transfer is kept in memory while it arrives, checked (length, SHA-256 = file_id, envelope)
and delivered to the mailbox of the identity that received it. The per-recipient outcome goes
back to the sender as a result packet. Anything a friend sends that does not fit is cancelled
and logged once; nothing of it reaches a mailbox.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from . import wire
from .toxcore.binding import FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME, FILE_KIND_DATA, ToxError
from .toxcore.node import ToxNode
from .wire import Reply

log = logging.getLogger("toxbridge.receiver")

# Transfers one friend may have arriving at once; more are refused (4.x, the sender retries).
MAX_INCOMING_PER_FRIEND = 16

Deliver = Callable[[str, bytes], Awaitable[Reply]]  # (envelope sender, message) -> Dovecot's reply


@dataclass(eq=False)
class Incoming:
    friend: int
    number: int
    file_id: bytes
    size: int
    parser: wire.PayloadParser
    data: bytearray = field(default_factory=bytearray)
    started: float = field(default_factory=time.monotonic)


class Receiver:
    """Incoming transfers of one Tox identity."""

    def __init__(self, node: ToxNode, max_message: int, hostname: str, mailbox_address: str, deliver: Deliver):
        self._node = node
        self._max_message = max_message
        self._max_payload = max_message + wire.MAX_HEADER + wire.PREFIX.size
        self._hostname = hostname
        self._mailbox_address = mailbox_address
        self._deliver = deliver
        self._incoming: dict[tuple[int, int], Incoming] = {}
        self._tasks: set[asyncio.Task] = set()

    def on_file_recv(self, friend: int, number: int, kind: int, size: int, filename: bytes) -> None:
        if kind != FILE_KIND_DATA or filename != wire.MAIL_FILENAME:
            log.warning("friend %s offered a file that is not a mail (kind %d); refused", self._peer(friend), kind)
            self._cancel(friend, number)
            return
        file_id = self._node.file_id(friend, number)
        if size > self._max_payload:
            self._answer(friend, file_id, Reply(552, f"5.3.4 message too big for this household (limit {self._max_message} bytes)"))
            self._cancel(friend, number)
            return
        if sum(1 for key in self._incoming if key[0] == friend) >= MAX_INCOMING_PER_FRIEND:
            self._answer(friend, file_id, Reply(451, "4.3.2 too many mails arriving at once; try again"))
            self._cancel(friend, number)
            return
        self._incoming[(friend, number)] = Incoming(friend, number, file_id, size, wire.PayloadParser(self._max_message))
        self._node.file_control(friend, number, FILE_CONTROL_RESUME)

    def on_chunk(self, friend: int, number: int, position: int, data: bytes) -> None:
        inc = self._incoming.get((friend, number))
        if inc is None:
            return
        if not data:
            del self._incoming[(friend, number)]
            self._complete(inc)
            return
        if position != len(inc.data) or position + len(data) > inc.size:
            self._refuse(inc, Reply(451, "4.6.0 transfer arrived out of order or too long; try again"), "chunk out of order")
            return
        try:
            inc.parser.feed(data)  # refuses a bad envelope before the rest arrives
        except wire.WireError as e:
            self._refuse(inc, Reply(554, f"5.6.0 malformed toxbridge payload: {e}"), str(e))
            return
        inc.data += data

    def on_control(self, friend: int, number: int, control: int) -> None:
        if control == FILE_CONTROL_CANCEL and self._incoming.pop((friend, number), None):
            log.info("friend %s cancelled a mail transfer", self._peer(friend))

    def on_friend_offline(self, friend: int) -> None:
        for key in [k for k in self._incoming if k[0] == friend]:
            del self._incoming[key]

    def _refuse(self, inc: Incoming, reply: Reply, why: str) -> None:
        log.warning("friend %s sent a broken mail transfer: %s", self._peer(inc.friend), why)
        del self._incoming[(inc.friend, inc.number)]
        self._answer(inc.friend, inc.file_id, reply)
        self._cancel(inc.friend, inc.number)

    def _complete(self, inc: Incoming) -> None:
        payload, inc.data = inc.data, bytearray()
        if len(payload) != inc.size or hashlib.sha256(payload).digest() != inc.file_id:
            log.warning("friend %s sent a mail whose length or hash does not match; asked to resend", self._peer(inc.friend))
            self._answer(inc.friend, inc.file_id, Reply(451, "4.6.0 payload damaged in transit (hash mismatch); try again"))
            return
        try:
            envelope, message = wire.decode_payload(payload, self._max_message)
            del payload
        except wire.WireError as e:
            log.warning("friend %s sent a malformed payload: %s", self._peer(inc.friend), e)
            self._answer(inc.friend, inc.file_id, Reply(554, f"5.6.0 malformed toxbridge payload: {e}"))
            return
        task = asyncio.get_running_loop().create_task(self._deliver_and_answer(inc, envelope, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_and_answer(self, inc: Incoming, envelope: wire.Envelope, message: bytes) -> None:
        peer_key = self._node.friend_public_key(inc.friend).hex()
        try:
            reply = await self._deliver(envelope.sender, self._trace_headers(peer_key, envelope) + message)
        except Exception:
            log.exception("delivery to Dovecot failed unexpectedly")
            reply = Reply(451, "4.3.0 internal error in the receiving toxbridge; try again")
        status = "sent" if reply.code < 300 else "deferred" if reply.code < 500 else "bounced"
        log.info(
            "%s: to=<%s>, peer=%s, size=%d, delay=%.2f, status=%s (%s)",
            inc.file_id.hex()[:12], self._mailbox_address, peer_key[:8], len(message),
            time.monotonic() - inc.started, status, reply,
        )
        self._answer(inc.friend, inc.file_id, reply)

    def _trace_headers(self, peer_key: str, envelope: wire.Envelope) -> bytes:
        """Received: and Authentication-Results: recording the friend's verified Tox key."""
        date = email.utils.formatdate(localtime=True)
        return (
            f"Received: from tox (Tox key {peer_key})\r\n"
            f"\tby {self._hostname} (toxbridge) with TOX\r\n"
            f"\tfor <{self._mailbox_address}>; {date}\r\n"
            f"Authentication-Results: {self._hostname}; x-tox=pass\r\n"
            f"\tsmtp.mailfrom={envelope.sender or '<>'} x-tox.key={peer_key}\r\n"
        ).encode("utf-8")

    def _answer(self, friend: int, file_id: bytes, reply: Reply) -> None:
        try:
            self._node.send_lossless_packet(friend, wire.encode_result(file_id, [reply]))
        except ToxError as e:
            # The sender sees no answer, tells its Postfix 4.4.1 and retries.
            log.warning("could not answer friend %s (%s); the sender will retry", self._peer(friend), e)

    def _cancel(self, friend: int, number: int) -> None:
        try:
            self._node.file_control(friend, number, FILE_CONTROL_CANCEL)
        except ToxError:
            pass

    def _peer(self, friend: int) -> str:
        try:
            return self._node.friend_public_key(friend).hex()[:8]
        except ToxError:
            return f"#{friend}"

    async def stop(self) -> None:
        """Let running deliveries finish (bounded by the LMTP client's own timeout)."""
        if self._tasks:
            await asyncio.wait(self._tasks)
