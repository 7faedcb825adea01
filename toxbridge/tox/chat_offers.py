"""A mail's attachments offered to a friend on a plain Tox chat app, as Tox file transfers.

Each attachment is offered under its own name (kind DATA; file_id the SHA-256 of its bytes)
and served from memory as toxcore asks for chunks. The chat user decides: accepted and every
byte sent (toxcore's last chunk request, of length 0), it is DONE; cancelled by them, DECLINED;
left unanswered for `accept_wait` seconds, NOT_TAKEN (the offer is withdrawn). The friend going
offline, or an accepted transfer making no progress for `stall_timeout`, is OFFLINE: the whole
mail is then deferred (4.4.1).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

from ..mail.chat_mail import attachment_name
from .errors import ToxError
from .library import FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME, FILE_KIND_DATA
from .node import ToxNode

log = logging.getLogger("toxbridge.chat")

DONE, DECLINED, NOT_TAKEN, OFFLINE = "done", "declined", "not taken", "offline"
CHECK_SECONDS = 1.0  # how often a waiting offer looks at its clocks


@dataclass(eq=False)
class _Offer:
    name: str
    data: bytes
    outcome: asyncio.Future[str]
    offered: float = field(default_factory=time.monotonic)
    accepted: bool = False
    last_progress: float = field(default_factory=time.monotonic)


class FileOffers:
    """One identity's file offers to chat friends."""

    def __init__(self, node: ToxNode, accept_wait: float, stall_timeout: float) -> None:
        self._node = node
        self._accept_wait, self._stall_timeout = accept_wait, stall_timeout
        self._offers: dict[tuple[int, int], _Offer] = {}

    async def send(self, friend: int, attachments: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
        """Offer every attachment at once; [(name shown to the chat user, outcome)] in order."""
        loop = asyncio.get_running_loop()
        offers: list[tuple[int | None, _Offer]] = []
        try:
            for raw_name, data in attachments:
                name = attachment_name(raw_name.encode())
                offer = _Offer(name, data, loop.create_future())
                try:
                    number = self._node.file_send(
                        friend, FILE_KIND_DATA, len(data), hashlib.sha256(data).digest(), name.encode()
                    )
                except ToxError as e:  # offline, or 256 transfers already: try the whole mail later
                    log.info("file offer to friend %s failed: %s", self._node.friend_label(friend), e)
                    offer.outcome.set_result(OFFLINE)
                    offers.append((None, offer))
                    continue
                self._offers[(friend, number)] = offer
                offers.append((number, offer))
            while not all(o.outcome.done() for _, o in offers):
                await asyncio.wait([o.outcome for _, o in offers], timeout=CHECK_SECONDS)
                self._check_clocks(friend, offers)
            return [(o.name, o.outcome.result()) for _, o in offers]
        finally:
            for open_number, _offer in offers:
                if open_number is not None and self._offers.pop((friend, open_number), None) is not None:
                    self._cancel(friend, open_number)  # still open (the caller gave up): withdrawn

    def _check_clocks(self, friend: int, offers: list[tuple[int | None, _Offer]]) -> None:
        now = time.monotonic()
        for number, offer in offers:
            if number is None or offer.outcome.done():
                continue
            if not offer.accepted and now - offer.offered > self._accept_wait:
                self._offers.pop((friend, number), None)
                self._cancel(friend, number)
                offer.outcome.set_result(NOT_TAKEN)
            elif offer.accepted and now - offer.last_progress > self._stall_timeout:
                self._offers.pop((friend, number), None)
                self._cancel(friend, number)
                offer.outcome.set_result(OFFLINE)

    def _cancel(self, friend: int, number: int) -> None:
        try:
            self._node.file_control(friend, number, FILE_CONTROL_CANCEL)
        except ToxError:
            pass

    # ---- toxcore events (loop thread)

    def on_chunk_request(self, friend: int, number: int, position: int, length: int) -> None:
        offer = self._offers.get((friend, number))
        if offer is None:
            return
        offer.accepted, offer.last_progress = True, time.monotonic()
        if length == 0:  # every byte sent: toxcore ends the transfer (and may reuse its number)
            del self._offers[(friend, number)]
            if not offer.outcome.done():
                offer.outcome.set_result(DONE)
            return
        try:
            self._node.file_send_chunk(friend, number, position, offer.data[position : position + length])
        except ToxError:
            pass  # a full send queue: toxcore asks for the chunk again

    def on_control(self, friend: int, number: int, control: int) -> None:
        offer = self._offers.get((friend, number))
        if offer is None:
            return
        if control == FILE_CONTROL_RESUME:
            offer.accepted, offer.last_progress = True, time.monotonic()
        elif control == FILE_CONTROL_CANCEL:
            del self._offers[(friend, number)]
            if not offer.outcome.done():
                offer.outcome.set_result(DECLINED)

    def on_friend_offline(self, friend: int) -> None:
        """Called before the node reports the friend's transfers cancelled: they are OFFLINE."""
        for key in [k for k in self._offers if k[0] == friend]:
            offer = self._offers.pop(key)
            if not offer.outcome.done():
                offer.outcome.set_result(OFFLINE)
