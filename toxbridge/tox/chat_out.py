"""Mail to a friend on a plain Tox chat app, delivered as chat messages.

The mail becomes messages (mail.chat_text); each is sent with tox_friend_send_message and the
answer to Postfix waits for toxcore's read receipt of every one of them: 250 only when the chat
app has them all. The friend offline, a message toxcore will not take, a receipt missing after
result_timeout: 4.4.1, and Postfix retries (the chat user may then see a message twice; a chat
app has no way to say "I have this one already"). Attachments are offered as file transfers
after the text (tox.chat_offers); 250 waits for each to be taken or declined, and says which
were declined, not taken in time or too big to offer. The words of a 4.4.1 say plainly that the
recipient uses a chat app: Postfix puts the last of them into the bounce a person reads.
"""

from __future__ import annotations

import asyncio
import logging

from ..mail.chat_text import as_chat
from ..mail.smtpreply import Reply
from .chat_offers import DECLINED, DONE, NOT_TAKEN, FileOffers
from .errors import ToxError, ToxSendQueueFull
from .library import MAX_MESSAGE_LENGTH
from .node import ToxNode

log = logging.getLogger("toxbridge.chat")

QUEUE_FULL_RETRIES, QUEUE_FULL_WAIT = 100, 0.05  # a full send queue drains as toxcore sends


def chat_unreachable(detail: str) -> Reply:
    """4.4.1 for mail to a chat app, in words for the person who may read them in a bounce."""
    return Reply(451, f"4.4.1 {detail}; the mail will be tried again")


def _app(detail: str) -> Reply:
    return chat_unreachable(f"the recipient uses a Tox chat app (not a mail bridge), which {detail}")


class ChatSender:
    """Chat messages of one identity waiting for their read receipts."""

    def __init__(
        self, node: ToxNode, result_timeout: float, offers: FileOffers | None = None, max_file: int = 0
    ) -> None:
        self._node = node
        self._result_timeout = result_timeout
        self.offers = offers  # None: attachments are named, not offered
        self._max_file = max_file
        self._waiting: dict[tuple[int, int], asyncio.Future[bool]] = {}

    async def send(self, friend: int, message: bytes) -> Reply:
        chat = as_chat(message, MAX_MESSAGE_LENGTH)
        lines = list(chat.messages)
        to_offer = [
            (n, d) for n, d in chat.attachments if self.offers is not None and len(d) <= self._max_file
        ]
        too_big = [n for n, d in chat.attachments if (n, d) not in to_offer]
        if too_big:  # the chat user learns of them, so does the sender (the 250 reply)
            why = f"over the {self._max_file} bytes sent over chat" if self.offers else "not sent over chat"
            lines.append(f"({len(too_big)} attachment(s) {why}: {', '.join(too_big)})".encode())
        if self._node.friend_connection(friend) == 0:
            return _app("is offline")
        loop = asyncio.get_running_loop()
        receipts: list[asyncio.Future[bool]] = []
        keys: list[tuple[int, int]] = []
        try:
            for text in lines:
                number = await self._send_one(friend, text[:MAX_MESSAGE_LENGTH])
                if number is None:
                    return _app("cannot take messages now")
                future: asyncio.Future[bool] = loop.create_future()
                self._waiting[(friend, number)] = future
                keys.append((friend, number))
                receipts.append(future)
            try:
                async with asyncio.timeout(self._result_timeout):
                    confirmed = await asyncio.gather(*receipts)
            except TimeoutError:
                return _app("did not confirm every message in time")
            if not all(confirmed):
                return _app("went offline before it confirmed every message")
        finally:
            for key in keys:
                self._waiting.pop(key, None)
        extra = f"; not offered (too big): {', '.join(too_big)}" if too_big else ""
        files = ""
        if to_offer and self.offers is not None:
            outcomes = await self.offers.send(friend, to_offer)
            if any(o not in (DONE, DECLINED, NOT_TAKEN) for _, o in outcomes):
                # Postfix retries the whole mail: the chat user may then see its text twice.
                return _app("went offline before every file was sent")
            declined = [n for n, o in outcomes if o != DONE]
            files = f" and {len(outcomes) - len(declined)} file(s)"
            if declined:
                said = [
                    f"{n} ({'declined' if o == DECLINED else 'not accepted in time'})"
                    for n, o in outcomes
                    if o != DONE
                ]
                extra += f"; not taken by the chat user: {', '.join(said)}"
                await self._tell(friend, f"(Attachment(s) not taken: {', '.join(said)}.)".encode())
        return Reply(
            250,
            f"2.0.0 delivered as {len(lines)} chat message(s){files}, each confirmed by the chat app{extra}",
        )

    async def _tell(self, friend: int, text: bytes) -> None:
        """A closing chat line; its receipt is awaited, but the mail is delivered either way."""
        number = await self._send_one(friend, text[:MAX_MESSAGE_LENGTH])
        if number is None:
            return
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[(friend, number)] = future
        try:
            async with asyncio.timeout(self._result_timeout):
                await future
        except TimeoutError:
            pass
        finally:
            self._waiting.pop((friend, number), None)

    async def _send_one(self, friend: int, text: bytes) -> int | None:
        for _ in range(QUEUE_FULL_RETRIES):
            try:
                return self._node.send_message(friend, text)
            except ToxSendQueueFull:
                await asyncio.sleep(QUEUE_FULL_WAIT)
            except ToxError as e:
                log.info("chat message to friend %s not sent: %s", self._node.friend_label(friend), e)
                return None
        return None

    # ---- toxcore events (loop thread)

    def on_read_receipt(self, friend: int, number: int) -> None:
        future = self._waiting.pop((friend, number), None)
        if future is not None and not future.done():
            future.set_result(True)

    def on_friend_offline(self, friend: int) -> None:
        for key in [k for k in self._waiting if k[0] == friend]:
            future = self._waiting.pop(key)
            if not future.done():
                future.set_result(False)
