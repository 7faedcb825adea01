"""LMTP client that hands mail that arrived over Tox to the household's Dovecot.

After DATA an LMTP server answers once per accepted recipient (RFC 2033); smtplib.LMTP reads
only one reply and desynchronises with several recipients, so this client reads them all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .config import Endpoint
from .smtpreply import DotStuffer, ReplyError, ReplyReader
from .wire import Reply

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
        self._writer.write(line.encode("utf-8") + b"\r\n")
        await self._writer.drain()
        return await self.reply()


async def deliver(
    endpoint: Endpoint,
    sender: str,
    recipients: list[str],
    message: bytes | Spooled,
    lhlo_name: str,
    timeout: float = 60.0,
) -> list[Reply]:
    """Deliver one message; returns one reply per recipient, in order.

    Failures to talk to the server at all become 4.x.x replies for every recipient: the mail
    stays with the sender, who retries.
    """
    try:
        return await _deliver(endpoint, sender, recipients, message, lhlo_name, timeout)
    except (OSError, asyncio.TimeoutError, ReplyError) as e:
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        log.warning("Dovecot LMTP at %s failed: %s (is Dovecot running? does dovecot_lmtp in the config name its LMTP listener?)", endpoint, reason)
        return [Reply(451, f"4.4.2 local delivery failed: {reason}")] * len(recipients)


async def _deliver(endpoint, sender, recipients, message, lhlo_name, timeout) -> list[Reply]:
    if endpoint.path:
        connecting = asyncio.open_unix_connection(endpoint.path, limit=1 << 20)
    else:
        connecting = asyncio.open_connection(endpoint.host, endpoint.port, limit=1 << 20)
    reader, writer = await asyncio.wait_for(connecting, timeout)
    session = LMTPSession(reader, writer, timeout)
    try:
        greeting = await session.reply()
        if greeting.code != 220:
            return [greeting] * len(recipients)
        lhlo = await session.command(f"LHLO {lhlo_name}")
        if lhlo.code != 250:
            return [lhlo] * len(recipients)
        extensions = {word.upper() for word in lhlo.text.split()}
        params = ""
        eight_bit = message.eight_bit if isinstance(message, Spooled) else not message.isascii()
        if eight_bit and "8BITMIME" in extensions:
            params += " BODY=8BITMIME"
        if not (sender + "".join(recipients)).isascii() and "SMTPUTF8" in extensions:
            params += " SMTPUTF8"
        mail = await session.command(f"MAIL FROM:<{sender}>{params}")
        if mail.code != 250:
            return [mail] * len(recipients)
        results: list[Reply | None] = []
        for rcpt in recipients:
            reply = await session.command(f"RCPT TO:<{rcpt}>")
            results.append(None if reply.code == 250 else reply)
        if all(r is not None for r in results):
            await session.command("QUIT")
            return results  # type: ignore[return-value]
        data = await session.command("DATA")
        if data.code != 354:
            return [r or data for r in results]
        stuffer = DotStuffer()
        for piece in message.pieces() if isinstance(message, Spooled) else [message]:
            writer.write(stuffer.feed(piece))
            await writer.drain()
        writer.write(stuffer.finish())
        await writer.drain()
        # One reply per accepted recipient, in the order they were accepted.
        final = [r if r is not None else await session.reply() for r in results]
        writer.write(b"QUIT\r\n")
        return final
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
