"""LMTP client that hands mail that arrived over Tox to the household's Dovecot.

After DATA an LMTP server answers once per accepted recipient (RFC 2033); smtplib.LMTP reads
only one reply and desynchronises with several recipients, so this client reads them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import Endpoint
from .smtpreply import DotStuffer, Reply, ReplyError, ReplyReader

log = logging.getLogger("toxbridge.lmtp_out")


READ_SIZE = 1 << 20


@dataclass(frozen=True)
class Spooled:
    """A message whose head is in memory and whose rest stays in a file: a big mail is streamed
    to Dovecot, never held whole in memory."""

    head: bytes
    path: Path
    offset: int  # where the rest starts in the file
    length: int  # bytes of the rest
    eight_bit: bool

    def pieces(self) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as spool:
            spool.seek(self.offset)
            left = self.length
            while left > 0:
                chunk = spool.read(min(READ_SIZE, left))
                if not chunk:
                    raise OSError(f"{self.path} ended {left} bytes early")
                left -= len(chunk)
                yield chunk


class LMTPSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self._reader, self._writer, self._timeout = reader, writer, timeout
        self._replies = ReplyReader()
        self._pending: list[Reply] = []

    async def reply(self) -> Reply:
        while not self._pending:
            data = await asyncio.wait_for(self._reader.read(65536), self._timeout)
            if not data:
                raise ConnectionResetError("the LMTP server closed the connection")
            self._pending.extend(self._replies.feed(data))
        return self._pending.pop(0)

    async def command(self, line: str) -> Reply:
        await self.send(line.encode("utf-8") + b"\r\n")
        return await self.reply()

    async def send(self, data: bytes) -> None:
        """Write and wait until the server took it, at most the session timeout (a Dovecot that
        stops reading would otherwise hold the mailbox for ever)."""
        self._writer.write(data)
        await asyncio.wait_for(self._writer.drain(), self._timeout)

    def close(self) -> None:
        """Drop the connection at once: close() would wait, unbounded, to flush what the server
        never read; between mails nothing is buffered, so nothing is lost."""
        self._writer.transport.abort()


class _Stale(Exception):
    """The kept connection was closed by the server before this mail began: nothing delivered."""


class LMTPClient:
    """Delivers to one LMTP server over one connection kept open between mails, one mail at a time.

    One per mailbox: mails to one mailbox delivered at once contend for Dovecot's dedup lock
    (.dovecot.lda-dupes.lock, the losers sleep ~135 ms), and a connection per mail costs the
    greeting and LHLO round trips. Measured (10 KB mails with X-Toxbridge-Id into one mailbox of
    the lab's Dovecot): one kept connection, one mail at a time, 365 msg/s; four new connections
    at a time, 286 msg/s. A connection idle for `idle_close` seconds is closed.
    """

    def __init__(self, endpoint: Endpoint, lhlo_name: str, timeout: float = 60.0, idle_close: float = 30.0):
        self._endpoint, self._lhlo_name, self._timeout, self._idle_close = (
            endpoint,
            lhlo_name,
            timeout,
            idle_close,
        )
        self._lock = asyncio.Lock()
        self._session: LMTPSession | None = None
        self._extensions: set[str] = set()
        self._idle: asyncio.TimerHandle | None = None

    async def deliver(self, sender: str, recipients: list[str], message: bytes | Spooled) -> list[Reply]:
        """One reply per recipient, in order. Failures to talk to the server at all become 4.x.x
        replies for every recipient: the mail stays with the sender, who retries."""
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
            try:
                try:
                    return await self._transaction(sender, recipients, message)
                except _Stale:
                    self.close()
                    return await self._transaction(sender, recipients, message)
            except (TimeoutError, _Stale, OSError, ReplyError) as e:
                self.close()
                reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                log.warning(
                    "Dovecot LMTP at %s failed: %s (is Dovecot running? does dovecot_lmtp in the config "
                    "name its LMTP listener?)",
                    self._endpoint,
                    reason,
                )
                return [Reply(451, f"4.4.2 local delivery failed: {reason}")] * len(recipients)
            finally:
                if self._session is not None:
                    self._idle = asyncio.get_running_loop().call_later(self._idle_close, self.close)

    def close(self) -> None:
        """Drop the connection (the server sees the client go; nothing is in flight between mails)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._session is not None:
            self._session.close()
            self._session = None

    async def _open(self) -> Reply | None:
        """Connect, read the greeting, LHLO; a refusal is returned (and the connection closed)."""
        if self._endpoint.path:
            connecting = asyncio.open_unix_connection(self._endpoint.path, limit=1 << 20)
        else:
            connecting = asyncio.open_connection(self._endpoint.host, self._endpoint.port, limit=1 << 20)
        reader, writer = await asyncio.wait_for(connecting, self._timeout)
        self._session = LMTPSession(reader, writer, self._timeout)
        greeting = await self._session.reply()
        if greeting.code != 220:
            self.close()
            return greeting
        lhlo = await self._session.command(f"LHLO {self._lhlo_name}")
        if lhlo.code != 250:
            self.close()
            return lhlo
        self._extensions = {word.upper() for word in lhlo.text.split()}
        return None

    async def _transaction(self, sender: str, recipients: list[str], message: bytes | Spooled) -> list[Reply]:
        kept = self._session is not None
        if not kept:
            refused = await self._open()
            if refused is not None:
                return [refused] * len(recipients)
        session = self._session
        assert session is not None  # _open() made one or said why not
        params = ""
        eight_bit = message.eight_bit if isinstance(message, Spooled) else not message.isascii()
        if eight_bit and "8BITMIME" in self._extensions:
            params += " BODY=8BITMIME"
        if not (sender + "".join(recipients)).isascii() and "SMTPUTF8" in self._extensions:
            params += " SMTPUTF8"
        try:
            mail = await session.command(f"MAIL FROM:<{sender}>{params}")
        except (OSError, ReplyError) as e:
            if kept:
                raise _Stale(str(e)) from None
            raise
        if mail.code == 421 and kept:  # e.g. "Disconnected for inactivity"
            raise _Stale(mail.text)
        if mail.code != 250:
            await self._reset()
            return [mail] * len(recipients)
        results: list[Reply | None] = []
        for rcpt in recipients:
            reply = await session.command(f"RCPT TO:<{rcpt}>")
            results.append(None if reply.code == 250 else reply)
        refusals = [r for r in results if r is not None]
        if len(refusals) == len(results):
            await self._reset()
            return refusals
        data = await session.command("DATA")
        if data.code != 354:
            await self._reset()
            return [r or data for r in results]
        stuffer = DotStuffer()
        for piece in message.pieces() if isinstance(message, Spooled) else [message]:
            await session.send(stuffer.feed(piece))
        await session.send(stuffer.finish())
        # One reply per accepted recipient, in the order they were accepted.
        return [r if r is not None else await session.reply() for r in results]

    async def _reset(self) -> None:
        """Back to the start of a transaction for the next mail; a server that refuses is dropped."""
        assert self._session is not None  # only inside a transaction
        if (await self._session.command("RSET")).code != 250:
            self.close()


async def deliver(
    endpoint: Endpoint,
    sender: str,
    recipients: list[str],
    message: bytes | Spooled,
    lhlo_name: str,
    timeout: float = 60.0,
) -> list[Reply]:
    """Deliver one message on a connection of its own; returns one reply per recipient, in order."""
    client = LMTPClient(endpoint, lhlo_name, timeout)
    try:
        return await client.deliver(sender, recipients, message)
    finally:
        client.close()
