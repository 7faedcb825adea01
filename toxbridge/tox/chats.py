"""Chat messages from friends who use a plain Tox chat app (qTox, toxic, aTox), as mail.

Each message is stored (ChatStore) before toxcore's callback returns. A friend's messages at
most `burst_gap` seconds apart make one burst; when that long passes without a message the
burst becomes one mail in the identity's user's INBOX, through Dovecot's LMTP like mail from a
bridge. At shutdown every open burst is delivered; what an earlier run left (a kill -9) is
delivered at start. A burst is capped in messages and bytes: a friend can make the household
store that much per burst and no more; the rest is counted, and the mail says how many. Files
the friend sent (tox.chat_files) are in the burst where they came, and attached to its mail. All
bursts of a UTC day together are capped too (chat.day_max_*): past it the friend is told once in
a chat line and the rest of its day is dropped, logged once and counted for `toxbridge status`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..config import ChatSettings
from ..mail.chat_mail import Attachment, Burst, ChatLine, compose, message_id
from ..mail.smtpreply import Reply
from .chat_store import ACTION, FILE, NORMAL, ChatStore, StoredMessage, utc_day

log = logging.getLogger("toxbridge.chat")

# A delivery Dovecot refused (4xx or 5xx) or that failed is tried again after this long.
RETRY_SECONDS = 60.0

Deliver = Callable[[str, bytes], Awaitable[Reply]]  # (envelope sender, message) -> Dovecot's reply
WhoIs = Callable[[bytes, str], tuple[str, str]]  # (key, Tox name) -> (name, address) for From
Tell = Callable[[bytes, str], None]  # (key, text): one chat line to the friend


def day_cap_text(address: str) -> str:
    return (
        f"(This bridge keeps no more of your messages today: the daily limit for mail to {address} "
        "is reached. Messages from now until midnight UTC are not delivered.)"
    )


class Chats:
    """One identity's chats with plain Tox clients."""

    def __init__(
        self,
        store: ChatStore,
        settings: ChatSettings,
        mailbox: str,
        address: str,
        hostname: str,
        deliver: Deliver,
        who_is: WhoIs,
        *,
        files_dir: Path | None = None,
        tell: Tell = lambda key, text: None,
    ) -> None:
        self._store, self._settings, self._files_dir = store, settings, files_dir
        self._mailbox, self._address, self._hostname = mailbox, address, hostname
        self._deliver, self._who_is, self._tell = deliver, who_is, tell
        self.cut_today: dict[bytes, tuple[str, int]] = {}  # friend → (UTC day, messages dropped)
        self._timers: dict[bytes, asyncio.TimerHandle] = {}
        self._dropped: dict[bytes, int] = {}  # friend → messages past the caps in the open burst
        self._tasks: set[asyncio.Task] = set()
        self._delivering: dict[bytes, asyncio.Task] = {}
        # Whether a file from the friend is arriving now: its burst waits for it, so a line
        # and the file it announces make one mail (set by the identity; stalls end a transfer).
        self.file_arriving: Callable[[bytes], bool] = lambda friend_key: False

    def on_message(self, friend_key: bytes, name: str, action: bool, text: bytes) -> None:
        """A chat message: on disk when this returns (or counted, past the burst's or the day's caps)."""
        now = time.time()
        if self._over_day_cap(friend_key, len(text), now):
            return
        count, size = self._store.size(self._mailbox, friend_key)
        if count >= self._settings.burst_max_messages or size + len(text) > self._settings.burst_max_bytes:
            dropped = self._dropped.get(friend_key, 0)
            if not dropped:  # one line per burst, not one per message of a flood
                log.warning(
                    "%s: friend %s sends more than one mail holds (%d messages, %d bytes); the rest of "
                    "this conversation is counted, not kept",
                    self._mailbox,
                    friend_key.hex()[:8],
                    self._settings.burst_max_messages,
                    self._settings.burst_max_bytes,
                )
            self._dropped[friend_key] = dropped + 1
        else:
            self._store.add(self._mailbox, friend_key, now, ACTION if action else NORMAL, name, text)
        self._arm(friend_key, self._settings.burst_gap)

    def on_file(self, friend_key: bytes, name: str, filename: str, path: Path) -> None:
        """A completed file, on disk at `path`: it joins the friend's open burst (or starts one)."""
        self._store.add_file(self._mailbox, friend_key, time.time(), name, filename, path)
        self._arm(friend_key, self._settings.burst_gap)

    def file_bytes(self, friend_key: bytes) -> int:
        """Bytes of files in the friend's open burst (its mail carries them all); when the burst
        holds burst_max_messages messages and files already, no file fits (a flood of tiny
        files is capped like a flood of messages)."""
        count, _ = self._store.size(self._mailbox, friend_key)
        if count >= self._settings.burst_max_messages:
            return sys.maxsize
        return self._store.file_bytes(self._mailbox, friend_key)

    def file_day_left(self, friend_key: bytes) -> int:
        """Bytes of files the friend may still make us keep today (chat.day_max_file_bytes)."""
        kept = self._store.day_file_bytes(self._mailbox, friend_key, time.time())
        return max(0, self._settings.day_max_file_bytes - kept)

    def _over_day_cap(self, friend_key: bytes, size: int, now: float) -> bool:
        messages, stored = self._store.day(self._mailbox, friend_key, now)
        if messages < self._settings.day_max_messages and stored + size <= self._settings.day_max_bytes:
            return False
        day = utc_day(now)
        seen_day, cut = self.cut_today.get(friend_key, ("", 0))
        if seen_day != day:  # the first of the day: one log line, one chat line to the friend
            cut = 0
            log.warning(
                "%s: friend %s reached today's chat limit (%d messages, %d bytes kept); the rest of "
                "the UTC day is dropped, and the friend was told",
                self._mailbox,
                friend_key.hex()[:8],
                messages,
                stored,
            )
            self._tell(friend_key, day_cap_text(self._address))
        self.cut_today[friend_key] = (day, cut + 1)
        return True

    def start(self) -> None:
        """Deliver what an earlier run stored and did not deliver."""
        if self._files_dir is not None:  # a kill between a file's move and its row, or after delivery
            kept = self._store.file_paths()
            for path in self._files_dir.iterdir():
                if str(path) not in kept:
                    path.unlink(missing_ok=True)
        for friend_key in self._store.waiting(self._mailbox):
            log.info(
                "%s: chat messages of friend %s left from before; delivering",
                self._mailbox,
                friend_key.hex()[:8],
            )
            self._arm(friend_key, 0)

    def _arm(self, friend_key: bytes, delay: float) -> None:
        timer = self._timers.pop(friend_key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[friend_key] = loop.call_later(delay, self._due, friend_key)

    def _due(self, friend_key: bytes) -> None:
        self._timers.pop(friend_key, None)
        if friend_key in self._delivering or self.file_arriving(friend_key):  # after it
            self._arm(friend_key, 1.0)
            return
        task = asyncio.get_running_loop().create_task(self._deliver_burst(friend_key))
        self._delivering[friend_key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._delivering.pop(friend_key, None))

    async def _deliver_burst(self, friend_key: bytes) -> bool:
        """True when the burst is in the mailbox (or there was none)."""
        stored = self._store.burst(self._mailbox, friend_key)
        if not stored:
            self._dropped.pop(friend_key, None)
            return True
        name, address = self._who_is(friend_key, stored[-1].name)
        dropped = self._dropped.pop(friend_key, 0)
        try:
            attachments = await asyncio.to_thread(_read_files, stored)
        except asyncio.CancelledError:
            self._dropped[friend_key] = self._dropped.get(friend_key, 0) + dropped
            raise
        burst = Burst(
            friend_key,
            name,
            address,
            tuple(_line(m, m.id in attachments) for m in stored),
            stored[0].id,
            stored[-1].id,
            dropped,
            tuple(attachments.values()),
        )
        thread = self._store.thread(self._mailbox, friend_key)
        started = time.monotonic()
        message = b""
        try:
            message = compose(burst, self._hostname, self._address, thread)
            reply = await self._deliver(f"{friend_key.hex()}@tox", message)
        except asyncio.CancelledError:
            self._dropped[friend_key] = self._dropped.get(friend_key, 0) + dropped
            raise
        except Exception as e:
            log.exception("%s: chat mail of friend %s failed", self._mailbox, friend_key.hex()[:8])
            reply = Reply(451, f"4.3.0 {e}")
        if reply.code < 300:
            done = self._store.delivered(
                self._mailbox, friend_key, burst.last_id, message_id(burst, self._hostname)
            )
            for path in done:  # in the mailbox now
                path.unlink(missing_ok=True)
        else:
            self._dropped[friend_key] = self._dropped.get(friend_key, 0) + dropped
            self._arm(friend_key, RETRY_SECONDS)
        status = "sent" if reply.code < 300 else "deferred"
        log.info(
            "chat %s: to=<%s>, peer=%s, messages=%d, files=%d, size=%d, delay=%.2f, status=%s (%s)",
            burst.burst_id.hex()[:12],
            self._address,
            friend_key.hex()[:8],
            len(stored) - len(attachments),
            len(attachments),
            len(message),
            time.monotonic() - started,
            status,
            reply,
        )
        return reply.code < 300

    async def stop(self) -> None:
        """Deliver every open burst now (the shutdown); what fails stays on disk for the next run."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for friend_key in self._store.waiting(self._mailbox):
            await self._deliver_burst(friend_key)
        for timer in self._timers.values():  # retries armed by failures: the next run does them
            timer.cancel()
        self._timers.clear()


def _read_files(stored: list[StoredMessage]) -> dict[int, Attachment]:
    """The burst's files, read from disk: message id → attachment (a missing file is left out)."""
    out: dict[int, Attachment] = {}
    for m in stored:
        if m.kind == FILE:
            try:
                out[m.id] = Attachment(m.text.decode("utf-8", "replace"), Path(m.path).read_bytes())
            except OSError as e:
                log.warning("chat file %s is gone (%s); its mail says so", m.path, e.strerror)
    return out


def _line(m: StoredMessage, attached: bool) -> ChatLine:
    text = m.text.decode("utf-8", "replace")
    if m.kind == FILE:
        text = f"(sent the file {text}: attached)" if attached else f"(sent the file {text}, which was lost)"
    return ChatLine(m.at, m.kind == ACTION, text)
